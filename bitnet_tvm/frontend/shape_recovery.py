"""Restore tensor shapes that a converter could not infer, from the ONNX value info.

Most shape losses in the TVM ONNX frontend come from a converter that builds a
shape at run time (``dynamic_strided_slice``, ``tensor_to_shape``) or from a
broadcast whose dimensions Relax cannot prove equal. The result has type
``R.Tensor(ndim=k)`` with no shape, and every later op inherits that. Dynamo
exports annotate almost every intermediate value with a symbolic shape in
``graph.value_info`` (``["batch", "seq + 1", 64]``), written in terms of the
same dimension names as the graph inputs.

When a converter returns a tensor without a shape, :class:`DeclaredShapes`
parses the declared shape of that output into a ``PrimExpr`` list over the
graph inputs' shape variables and emits ``R.match_cast(value, R.Tensor(shape))``.
A match-cast is checked when the program runs, so a wrong annotation gives a
clear run-time error, never a silently wrong result. Known shapes are never
replaced. Dimensions that cannot be parsed, or whose names are not graph-input
dimensions in a compound expression, become fresh variables, so the rank is
still recovered.
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
    except _Unsupported:
        return None


class _Unsupported(Exception):
    """Internal: the dimension expression uses syntax we do not translate."""


def _to_prim(node: ast.AST, symbols: dict[str, tirx.Var]) -> tirx.PrimExpr:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return tirx.IntImm("int64", node.value)
    if isinstance(node, ast.Name):
        if node.id not in symbols:
            raise _Unsupported(node.id)
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
        raise _Unsupported(type(node.op).__name__)
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
    raise _Unsupported(type(node).__name__)


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
        """Give ``value`` the declared shape of ``output_name`` if it has none.

        Parameters
        ----------
        bb : tvm.relax.BlockBuilder
            The importer's block builder.
        value : tvm.relax.Expr
            A converter's result.
        output_name : str
            The ONNX value name this result is bound to.
        nodes : dict of str to tvm.relax.Expr
            The importer's value table (used to find the graph inputs' shape variables).

        Returns
        -------
        tvm.relax.Expr
            ``value`` unchanged, or a match-cast of it to the declared shape.
        """
        if not isinstance(value, relax.Expr) or tvm.ir.is_prim_expr(value):
            return value
        value = bb.normalize(value)
        ty = value.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is not None:
            return value
        declared = self._dims.get(output_name)
        if declared is None or (ty.ndim != -1 and ty.ndim != len(declared)):
            return value
        symbols = self._input_symbols(nodes)
        shape = [self._dim_expr(dim, symbols) for dim in declared]
        self.recovered.append(output_name)
        return bb.match_cast(value, relax.TensorType(shape, ty.dtype))
