"""``run_graph_passes`` on exports of our tiny model, per scheme, and with re-quantization."""

from __future__ import annotations

import json

import pytest
import tvm
from tvm import tirx

from bitnet_tvm.export import export_onnx
from bitnet_tvm.frontend import import_onnx
from bitnet_tvm.model import BitNetForCausalLM
from bitnet_tvm.model.config import get_config
from bitnet_tvm.relay_passes.pipeline import run_graph_passes
from bitnet_tvm.report import collect_report
from bitnet_tvm.schemes import get_scheme

TARGET = tvm.target.Target({"kind": "llvm"})
CFG = get_config("tiny")
QKV_N = (CFG.num_attention_heads + 2 * CFG.num_key_value_heads) * CFG.head_dim
H, I = CFG.hidden_size, CFG.intermediate_size


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Imported Relax modules of the tiny model exported in each scheme (once per module)."""
    out = {}
    for scheme in ("a4.8", "b1.58"):
        model = BitNetForCausalLM(get_config("tiny", scheme=scheme), seed=0)
        path = tmp_path_factory.mktemp(scheme.replace(".", "_")) / "model.onnx"
        export_onnx(model, path, verify=False, example_seq_len=2)
        out[scheme] = import_onnx(path)
    return out


@pytest.fixture(scope="module")
def compiled(exported):
    cache = {}

    def get(export_scheme: str, scheme: str | None = None):
        key = (export_scheme, scheme)
        if key not in cache:
            s = get_scheme(scheme) if scheme else None
            cache[key] = run_graph_passes(exported[export_scheme], TARGET, s)
        return cache[key]

    return get


def _specs(mod):
    return {
        gv.name_hint: json.loads(str(f.attrs["bitnet.spec"]))
        for gv, f in mod.functions_items()
        if isinstance(f, tirx.PrimFunc) and f.attrs is not None and "bitnet.spec" in f.attrs
    }


def _quantize_specs(mod):
    """Specs of the norm_quantize calls of ``main``, in call order."""
    specs = _specs(mod)
    text = mod["main"].script(show_meta=False)
    calls = [
        line.split("R.call_tir(")[1].split(",")[0]
        for line in text.splitlines()
        if "call_tir(" in line
    ]
    return [specs[c] for c in calls if c in specs and specs[c]["type"] == "QuantizeSpec"]


def _expected_ops(bits: int):
    per_layer = [
        (f"ternary_int{bits}_matmul", QKV_N, H, bits),
        ("sparse_int8_matmul", H, H, 8),
        (f"ternary_int{bits}_gate_up", 2 * I, H, bits),
        ("sparse_int8_matmul", H, I, 8),
    ]
    return per_layer * CFG.num_hidden_layers


@pytest.mark.parametrize(("scheme", "bits"), [("a4.8", 4), ("b1.58", 8)])
def test_operator_sequence(compiled, scheme, bits):
    report = collect_report(compiled(scheme))
    assert report.unfused_matmuls == 0
    got = [(r.operator, r.n, r.k, r.act_bits) for r in report.layers]
    assert got == _expected_ops(bits)
    # The sparse operator reads K-major weights, the dense ones row-major (select_layout).
    layouts = {r.operator.startswith("sparse"): r.layout for r in report.layers}
    assert layouts == {True: "2bit_kmajor", False: "2bit"}


def test_vnni_layouts(exported):
    """On a VNNI CPU the dense matmuls take the interleaved layout, while the fused gate/up,
    read gate row first and its up row only where relu(gate) > 0, keeps row-major rows."""
    vnni = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
    report = collect_report(run_graph_passes(exported["a4.8"], vnni))
    layouts = {r.operator: r.layout for r in report.layers}
    assert layouts == {
        "sparse_int8_matmul": "2bit_kmajor",
        "ternary_int4_matmul": "2bit_vnni",
        "ternary_int4_gate_up": "2bit",
    }


@pytest.mark.parametrize("scheme", ["a4.8", "b1.58"])
def test_every_norm_is_fused_and_quantizers_kept(compiled, scheme):
    specs = _quantize_specs(compiled(scheme))
    assert len(specs) == 4 * CFG.num_hidden_layers
    assert all(s["norm_eps"] is not None and s["has_weight"] for s in specs)
    want = get_scheme(scheme)
    for i, site in enumerate(["qkv", "o", "gate_up", "down"] * CFG.num_hidden_layers):
        act = specs[i]["act"]
        ref = want.site(site)
        assert (act["method"], act["bits"], act["topk"], act["eps_mode"]) == (
            ref.method.value,
            ref.bits,
            ref.topk,
            ref.eps_mode.value,
        ), (i, site)


def test_scheme_option_requantizes(compiled):
    """A b1.58 export compiled with ``scheme="a4.8"``: INT4 q/k/v and gate/up, TopK o_proj."""
    mod = compiled("b1.58", "a4.8")
    report = collect_report(mod)
    assert report.unfused_matmuls == 0
    assert [(r.operator, r.n, r.k) for r in report.layers] == [
        (op, n, k) for op, n, k, _ in _expected_ops(4)
    ]
    specs = _quantize_specs(mod)
    acts = [(s["act"]["method"], s["act"]["bits"], s["act"]["topk"]) for s in specs]
    assert (
        acts
        == [
            ("absmean", 4, None),
            ("absmax", 8, 0.5),
            ("absmean", 4, None),
            ("absmax", 8, None),
        ]
        * CFG.num_hidden_layers
    )
    assert all(s["norm_eps"] is not None for s in specs)
