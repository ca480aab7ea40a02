"""Restore tensor shapes that a converter could not infer, from the ONNX value info.

Most shape losses in the TVM ONNX frontend come from a converter that builds a
shape at run time (``dynamic_strided_slice``, ``tensor_to_shape``) or from a
broadcast whose dimensions Relax cannot prove equal. The result has type
``R.Tensor(ndim=k)`` with no shape, and every later op inherits that. Dynamo
exports annotate almost every intermediate value with a symbolic shape in
``graph.value_info`` (``["batch", "seq + 1", 64]``), written in terms of the
same dimension names as the graph inputs.

After every converter, :meth:`DeclaredShapes.recover` looks at the result:

* no shape: cast it to the declared shape of that ONNX value, parsed into
  ``PrimExpr``s over the graph inputs' shape variables, or, with no
  declaration, to fresh variables of its rank. Relax legalises an op only when
  its arguments' shapes are expression lists, so even rank-only recovery
  matters;
* a shape that mentions variables the graph inputs do not define (for
  example ``range_len_0`` from the stock ``Range`` converter, or ``x_0`` from
  ``Expand``'s run-time path): cast it to the declaration when that is fully
  expressible in graph-input dimensions, so later broadcasts can prove their
  dimensions equal.

The cast is ``R.match_cast(value, R.Tensor(shape))``, which is checked when
the program runs: a wrong annotation gives a clear run-time error, never a
silently wrong result. Shapes already written in graph-input dimensions are
left alone. The one loss this cannot repair is a broadcast op whose own output
shape is unknown (its inputs have dimensions Relax cannot prove equal): that op
itself cannot be legalised. Such inputs must be fixed where they are produced,
which is what :mod:`bitnet_tvm.frontend.converters` does for ``Range``.
"""

from __future__ import annotations

import ast
import itertools

import onnx
import tvm
from tvm import relax, tirx

__all__ = ["DeclaredShapes", "parse_dim_expression"]

_fresh_ids = itertools.count()


def _fresh_var(hint: str) -> tirx.Var:
    return tirx.Var(f"{hint}_{next(_fresh_ids)}", "int64")


def parse_dim_expression(text: str, symbols: dict[str, tirx.Var]) -> tirx.PrimExpr | None:
    """Parse a symbolic ONNX dimension such as ``"past + seq"`` into a ``PrimExpr``.

    Parameters
    ----------
    text : str
        The ``dim_param`` string written by the exporter. Supported: integers,
        names, ``+ - * // %``, unary minus, parentheses and ``Max``/``Min``
        (also lower-case), and ``floor(a / b)``.
    symbols : dict of str to tvm.tirx.Var
        Known dimension names. Names not in ``symbols`` make the parse fail.

    Returns
    -------
    tvm.tirx.PrimExpr or None
        The expression in int64, or ``None`` when ``text`` uses anything else.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None
    try:
        return _to_prim(tree.body, symbols)
    except _UnsupportedDimError:
        return None


class _UnsupportedDimError(Exception):
    """Internal: the dimension expression uses syntax we do not translate."""


def _to_prim(node: ast.AST, symbols: dict[str, tirx.Var]) -> tirx.PrimExpr:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return tirx.IntImm("int64", node.value)
    if isinstance(node, ast.Name):
        if node.id not in symbols:
            raise _UnsupportedDimError(node.id)
        return symbols[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return tirx.IntImm("int64", 0) - _to_prim(node.operand, symbols)
    if isinstance(node, ast.BinOp):
        lhs, rhs = _to_prim(node.left, symbols), _to_prim(node.right, symbols)
        ops = {
            ast.Add: lambda a, b: a + b,
            ast.Sub: lambda a, b: a - b,
            ast.Mult: lambda a, b: a * b,
            ast.FloorDiv: tirx.floordiv,
            ast.Mod: tirx.floormod,
        }
        for op_type, fn in ops.items():
            if isinstance(node.op, op_type):
                return fn(lhs, rhs)
        raise _UnsupportedDimError(type(node.op).__name__)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name = node.func.id.lower()
        if name in ("max", "min") and len(node.args) >= 2:
            args = [_to_prim(a, symbols) for a in node.args]
            fn = tirx.max if name == "max" else tirx.min
            out = args[0]
            for arg in args[1:]:
                out = fn(out, arg)
            return out
        if name == "floor" and len(node.args) == 1:
            arg = node.args[0]
            if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Div):
                return tirx.floordiv(_to_prim(arg.left, symbols), _to_prim(arg.right, symbols))
    raise _UnsupportedDimError(type(node).__name__)


class DeclaredShapes:
    """Shapes that an ONNX graph declares for its values (``value_info`` and outputs).

    Parameters
    ----------
    graph : onnx.GraphProto
        The graph being imported.
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self._dims: dict[str, list[int | str | None]] = {}
        for info in [*graph.value_info, *graph.output]:
            tensor_type = info.type.tensor_type
            if not info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
                continue
            dims: list[int | str | None] = []
            for dim in tensor_type.shape.dim:
                if dim.HasField("dim_value"):
                    dims.append(int(dim.dim_value))
                elif dim.HasField("dim_param") and dim.dim_param:
                    dims.append(dim.dim_param)
                else:
                    dims.append(None)
            self._dims[info.name] = dims
        self._input_names = [i.name for i in graph.input]
        self._symbols: dict[str, tirx.Var] | None = None
        self._named_fresh: dict[str, tirx.Var] = {}
        self.recovered: list[str] = []

    def _input_symbols(self, nodes: dict[str, relax.Expr]) -> dict[str, tirx.Var]:
        """Map dimension names to the shape variables of the imported graph inputs."""
        if self._symbols is None:
            symbols: dict[str, tirx.Var] = {}
            for name in self._input_names:
                value = nodes.get(name)
                ty = getattr(value, "ty", None)
                if not isinstance(value, relax.Var) or not isinstance(ty, relax.TensorType):
                    continue
                if ty.shape is None:
                    continue
                for dim in ty.shape.values:
                    if isinstance(dim, tirx.Var):
                        symbols.setdefault(dim.name, dim)
            self._symbols = symbols
        return self._symbols

    def _dim_expr(self, dim: int | str | None, symbols: dict[str, tirx.Var]) -> tirx.PrimExpr:
        if isinstance(dim, int):
            return tirx.IntImm("int64", dim)
        if dim is None:
            return _fresh_var("dim")
        parsed = parse_dim_expression(dim, symbols)
        if parsed is not None:
            return parsed
        if dim.isidentifier():
            # A name the graph inputs do not define (e.g. a data-dependent size):
            # one variable per name, so equal names stay equal.
            if dim not in self._named_fresh:
                self._named_fresh[dim] = tirx.Var(dim, "int64")
            return self._named_fresh[dim]
        return _fresh_var("dim")

    def recover(
        self,
        bb: relax.BlockBuilder,
        value: relax.Expr,
        output_name: str,
        nodes: dict[str, relax.Expr],
    ) -> relax.Expr:
        """Re-type ``value`` with the declared shape of ``output_name`` where that helps.

        Two cases are handled:

        * ``value`` has no shape: cast it to the declared shape, or, with no
          declaration, to fresh variables of its known rank (Relax can only
          legalise the consumers of a tensor whose shape is a list of expressions);
        * ``value`` has a shape that mentions variables the graph inputs do not
          define (``range_len_0``, ``x_0`` from run-time shape computations) and
          the declaration is fully expressible in graph-input dimensions: cast
          it to that, so later broadcasts can prove their dimensions equal.

        Parameters
        ----------
        bb : tvm.relax.BlockBuilder
            The importer's block builder.
        value : tvm.relax.Expr
            A converter's result (normalised).
        output_name : str
            The ONNX value name this result is bound to.
        nodes : dict of str to tvm.relax.Expr
            The importer's value table (used to find the graph inputs' shape variables).

        Returns
        -------
        tvm.relax.Expr
            ``value`` unchanged, or a match-cast of it.
        """
        if not isinstance(value, relax.Expr) or tvm.ir.is_prim_expr(value):
            return value
        ty = value.ty
        if not isinstance(ty, relax.TensorType):
            return value
        symbols = self._input_symbols(nodes)
        declared = self._dims.get(output_name)
        if declared is not None and ty.ndim not in (-1, len(declared)):
            declared = None
        if ty.shape is None:
            if declared is not None:
                shape = [self._dim_expr(dim, symbols) for dim in declared]
            elif ty.ndim >= 0:
                shape = [_fresh_var("dim") for _ in range(ty.ndim)]
            else:
                return value
        else:
            if declared is None or not isinstance(ty.shape, relax.ShapeExpr):
                return value
            known = list(symbols.values())
            if not any(_has_foreign_var(dim, known) for dim in ty.shape.values):
                return value
            parsed = [tirx.IntImm("int64", d) if isinstance(d, int) else None for d in declared]
            for i, dim in enumerate(declared):
                if isinstance(dim, str):
                    parsed[i] = parse_dim_expression(dim, symbols)
            if any(p is None for p in parsed):
                return value
            shape = parsed
        self.recovered.append(output_name)
        return bb.match_cast(value, relax.TensorType(shape, ty.dtype))


def _has_foreign_var(dim: tirx.PrimExpr, known: list[tirx.Var]) -> bool:
    """Return whether ``dim`` uses a variable that is not one of ``known``."""
    if isinstance(dim, int | tirx.IntImm):
        return False
    return any(not any(var.same_as(k) for k in known) for var in tirx.analysis.undefined_vars(dim))
