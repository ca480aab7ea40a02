"""No PrimFunc of a compiled model runs as an unscheduled loop nest.

The module is captured (a pass instrument) at the end of the Relax lowering pipeline, after
every scheduling pass, for the built-in model's prefill export and its with-past (decode)
export.  Criterion, per PrimFunc:

1. it carries ``tirx.is_scheduled`` (set by dlight's ``ApplyDefaultSchedule`` only when a rule
   returned a schedule) -- except functions without any loop: the VM's ``shape_func`` (a few
   int64 stores computing symbolic shapes on the host);
2. and it has a parallel or vectorized loop, or else every innermost loop of its blocks has a
   symbolic extent (positions, masks, ``k`` transposed over ``past + seq``: LLVM's loop
   vectorizer takes those plain contiguous loops, while TVM's vectorizer would scalarize a
   predicated tail) or a static extent of 1 everywhere (one scalar per token, e.g. the final
   norm's ``sqrt``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import s_tir

import bitnet_tvm
from bitnet_tvm.export import export_onnx
from bitnet_tvm.model.builtin import load_builtin_model, load_heldout_sample


@tvm.instrument.pass_instrument
class _Capture:
    def __init__(self) -> None:
        self.lowered = None

    def run_after_pass(self, mod, info) -> None:
        if info.name == "bitnet.lowering":
            self.lowered = mod


def _leaf_loops(func: tvm.tirx.PrimFunc) -> list[list]:
    """For each leaf block of ``func``: its loops (For nodes), outermost first."""
    sch = s_tir.Schedule(func)
    out, todo = [], list(sch.get_child_blocks(sch.get_sblock("root")))
    while todo:
        block = todo.pop()
        children = sch.get_child_blocks(block)
        if children:
            todo.extend(children)
        else:
            out.append([sch.get(loop) for loop in sch.get_loops(block)])
    return out


def _well_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    script = func.script()  # hand-written kernels (no blocks) are checked by their loops alone
    if "T.parallel(" in script or "T.vectorized(" in script:
        return True
    for nest in _leaf_loops(func):
        if not nest:
            continue
        inner = nest[-1].extent
        static = [int(loop.extent) for loop in nest if isinstance(loop.extent, tvm.tirx.IntImm)]
        if isinstance(inner, tvm.tirx.IntImm) and any(e != 1 for e in static):
            return False
    return True


def _has_loops(func: tvm.tirx.PrimFunc) -> bool:
    return "for " in func.script()


VARIANTS = {"prefill_int8_head": (False, "int8"), "with_past": (True, "fp32")}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Per variant: the export, the compiled model and the lowered PrimFuncs by name."""
    model = load_builtin_model(form="int8")
    out = {}
    for name, (with_past, lm_head) in VARIANTS.items():
        path = export_onnx(
            model,
            tmp_path_factory.mktemp(name) / "m.onnx",
            weights="int8",
            verify=False,
            with_past=with_past,
        )
        capture = _Capture()
        with tvm.transform.PassContext(opt_level=3, instruments=[capture]):
            compiled = bitnet_tvm.compile(path, lm_head=lm_head)
        funcs = {
            gv.name_hint: f
            for gv, f in capture.lowered.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc)
        }
        out[name] = (model, compiled, funcs)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_primfunc_is_scheduled(built, variant):
    _, _, funcs = built[variant]
    assert len(funcs) > 20
    unscheduled = [
        name for name, f in funcs.items() if "tirx.is_scheduled" not in f.attrs and _has_loops(f)
    ]
    assert unscheduled == []
    weak = [
        name
        for name, f in funcs.items()
        if "tirx.is_scheduled" in f.attrs and not _well_scheduled(f)
    ]
    assert weak == []
    # float matmuls (attention; the LM head with the fp32 head) went to FloatMatmul
    matmuls = [f for name, f in funcs.items() if name.startswith("matmul")]
    assert matmuls and all("matmul_local" in f.script() for f in matmuls)


def test_int8_lm_head_logits_stay_close_to_torch(built):
    """The INT8 head (weight per row, activation per token) against the torch model's float
    head: logits SQNR above 30 dB and the same argmax at >= 97% of positions (measured on the
    held-out sample: 55.8 dB and 99.6%, benchmarks/int8_lm_head.py)."""
    model, compiled, funcs = built["prefill_int8_head"]
    assert compiled.metadata["lm_head"] == "int8"
    assert any(str(f.attrs.get("bitnet.op", "")) == "int8_matmul" for f in funcs.values())
    ids = np.frombuffer(load_heldout_sample(), dtype=np.uint8)[:128].astype(np.int64)[None]
    with torch.no_grad():
        want = model(torch.from_numpy(ids))[0].numpy().astype(np.float64)
    got = compiled.run(["logits"], {"input_ids": ids})[0]
    sqnr = 10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))
    assert sqnr > 30
    assert np.mean(want.argmax(-1) == got.argmax(-1)) >= 0.97
