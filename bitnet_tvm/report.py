"""What a compile did to each BitLinear: the compile report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import tvm
from tvm import relax

from bitnet_tvm.relay_passes.emit import MatmulSpec, read_spec
from bitnet_tvm.relay_passes.graph_view import GraphView
from bitnet_tvm.relay_passes.quant_match import weight_codes

__all__ = ["CompileReport", "LayerReport", "collect_report"]


@dataclass(frozen=True)
class LayerReport:
    """One fused ternary operator of the compiled graph."""

    name: str  # e.g. "layers_0_qkv_proj"
    operator: str  # e.g. "ternary_int4_matmul"
    n: int
    k: int
    act_bits: int
    layout: str


@dataclass
class CompileReport:
    """The fused operators chosen, and the ternary MatMuls left unfused (should be 0)."""

    layers: list[LayerReport] = field(default_factory=list)
    unfused_matmuls: int = 0
    unfused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CompileReport:
        """Inverse of :meth:`to_dict`."""
        layers = [LayerReport(**layer) for layer in data.get("layers", [])]
        return cls(layers, int(data.get("unfused_matmuls", 0)), list(data.get("unfused", [])))

    def __str__(self) -> str:
        rows = [f"{'layer':<28} {'operator':<24} {'N':>6} {'K':>6}  layout"]
        rows += [
            f"{r.name:<28} {r.operator:<24} {r.n:>6} {r.k:>6}  {r.layout}" for r in self.layers
        ]
        rows.append(f"unfused ternary MatMuls: {self.unfused_matmuls}")
        return "\n".join(rows)


def operator_name(spec: MatmulSpec) -> str:
    """Public name of the fused operator a spec builds."""
    if spec.kind == "sparse":
        return "sparse_int8_matmul"
    if spec.kind == "gate_up":
        return f"ternary_int{spec.act_bits}_gate_up"
    return f"ternary_int{spec.act_bits}_matmul"


def collect_report(mod: tvm.IRModule) -> CompileReport:
    """Read the report off a module after the graph passes."""
    report = CompileReport()
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        g = GraphView.of(mod, func)
        for var in g.var2val:
            found = read_spec(g, var)
            if found is not None and isinstance(found[0], MatmulSpec):
                spec = found[0]
                report.layers.append(
                    LayerReport(
                        var.name,
                        operator_name(spec),
                        spec.weight_rows,
                        spec.k,
                        spec.act_bits,
                        spec.layout.value,
                    )
                )
            matmul = g.call(var, "matmul")
            if matmul is not None and weight_codes(g, matmul.args[1]) is not None:
                report.unfused.append(var.name)
    report.unfused_matmuls = len(report.unfused)
    return report
