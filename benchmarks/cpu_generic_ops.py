"""Benchmark of the generic CPU rules (float matmul, injective), not a test.

1. The tiny built-in-shaped model's decode step (one token, ``past`` cached tokens), compiled
   twice in one process: with the generic rules (``after``) and with them declining
   (``before``: the ops stay TVM's unscheduled loop nests).  Runs are interleaved; minimum of
   repeats.
2. The float32 LM head ``[M, 2560] @ [2560, vocab]`` as ``FloatMatmul`` schedules it, against
   numpy (OpenBLAS) in the same run: µs, GB/s of weight bytes (M = 1), GFLOP/s (M = 128);
   and the INT8 head (``Int8Matmul``) for one token.

    python benchmarks/cpu_generic_ops.py [--vocab 32000] [--out benchmarks/results/cpu_generic_ops]

Writes JSON (machine, TVM version, command, numbers) and a PNG.  The machines are shared and
noisy: compare columns of the same run only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from bitnet_tvm.atomic import atomic_open
from bitnet_tvm.machine import cpu_model
from bitnet_tvm.schedules.cpu.injective import Injective
from bitnet_tvm.schedules.cpu.matmul_fp import FloatMatmul
from bitnet_tvm.schedules.target import host_target


@contextlib.contextmanager
def generic_rules_off():
    """Make :class:`FloatMatmul` and :class:`Injective` decline everything (the "before")."""
    saved = FloatMatmul.accepts, Injective.accepts
    FloatMatmul.accepts = Injective.accepts = lambda self, func, target: False
    try:
        yield
    finally:
        FloatMatmul.accepts, Injective.accepts = saved


def decode_step_us(past: int = 64, repeat: int = 200, rounds: int = 5) -> dict[str, float]:
    """Min µs of one decode step of the tiny a4.8 model, before/after, interleaved."""
    import bitnet_tvm
    from bitnet_tvm.export import export_onnx
    from bitnet_tvm.model import BitNetForCausalLM, get_config

    config = get_config("tiny", scheme="a4.8")
    model = BitNetForCausalLM(config, seed=0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "tiny.onnx", verify=False, with_past=True)
        after = bitnet_tvm.compile(path)
        with generic_rules_off():
            before = bitnet_tvm.compile(path)
    rng = np.random.default_rng(0)
    kv = (1, config.num_key_value_heads, past, config.head_dim)
    feed = {"input_ids": np.array([[7]], np.int64)}
    for spec in after.get_inputs()[1:]:
        feed[spec["name"]] = rng.standard_normal(kv).astype(np.float32)
    dev = tvm.cpu()
    tensors = {k: tvm.runtime.tensor(v, dev) for k, v in feed.items()}
    best = {"before": float("inf"), "after": float("inf")}
    for _ in range(rounds):
        for name, compiled in (("before", before), ("after", after)):
            compiled.run_tvm(tensors)
            start = time.perf_counter()
            for _ in range(repeat):
                compiled.run_tvm(tensors)
            best[name] = min(best[name], (time.perf_counter() - start) / repeat * 1e6)
    np.testing.assert_allclose(
        after.run(None, feed)[0], before.run(None, feed)[0], rtol=1e-4, atol=1e-4
    )
    return best


def _lm_head(m: tvm.tirx.Var, k: int, n: int) -> tvm.tirx.PrimFunc:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, m, k], "float32"))
    w = relax.Var("w", relax.TensorType([k, n], "float32"))
    with bb.function("main", [x, w]):
        bb.emit_func_output(bb.emit(relax.op.matmul(x, w)))
    return relax.transform.LegalizeOps()(bb.get())["matmul"]


def lm_head(vocab: int, hidden: int = 2560, ms=(1, 128)) -> list[dict]:
    """FloatMatmul vs numpy on the LM head, per M."""
    target = host_target()
    func = _lm_head(tvm.tirx.Var("m", "int64"), hidden, vocab)
    sch = FloatMatmul().apply(func, target, False)
    ex = tvm.compile(
        tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target
    )
    rng = np.random.default_rng(0)
    w = rng.standard_normal((hidden, vocab), dtype=np.float32)
    w_tvm = tvm.runtime.tensor(w)
    rows = []
    for m in ms:
        x = rng.standard_normal((1, m, hidden), dtype=np.float32)
        out = tvm.runtime.tensor(np.zeros((1, m, vocab), np.float32))
        args = (tvm.runtime.tensor(x), w_tvm, out)
        number = 3 if m == 1 else 1
        timer = ex.mod.time_evaluator("main", tvm.cpu(), number=number, repeat=5)
        ours, ref = [], []
        for _ in range(3):  # interleave ours and numpy
            ours.append(min(timer(*args).results))
            for _ in range(number):
                start = time.perf_counter()
                expect = x @ w
                ref.append(time.perf_counter() - start)
        err = float(np.abs(out.numpy() - expect).max() / np.abs(expect).max())
        t_ours, t_ref = min(ours), min(ref)
        rows.append(
            {
                "m": m,
                "n": vocab,
                "k": hidden,
                "tvm_us": t_ours * 1e6,
                "numpy_us": t_ref * 1e6,
                "tvm_weight_gbps": w.nbytes / t_ours / 1e9,
                "numpy_weight_gbps": w.nbytes / t_ref / 1e9,
                "tvm_gflops": 2 * m * hidden * vocab / t_ours / 1e9,
                "numpy_gflops": 2 * m * hidden * vocab / t_ref / 1e9,
                "max_rel_err": err,
            }
        )
        print(
            f"LM head M={m:<4} {vocab}x{hidden}: tvm {t_ours * 1e3:8.2f} ms "
            f"({rows[-1]['tvm_weight_gbps']:5.1f} GB/s, {rows[-1]['tvm_gflops']:6.1f} GF/s)  "
            f"numpy {t_ref * 1e3:8.2f} ms ({rows[-1]['numpy_weight_gbps']:5.1f} GB/s, "
            f"{rows[-1]['numpy_gflops']:6.1f} GF/s)  rel err {err:.1e}"
        )
    return rows


def lm_head_int8(vocab: int, hidden: int = 2560) -> dict:
    """The INT8 head (``int8_matmul`` as :class:`Int8Matmul` schedules it), one token."""
    from bitnet_tvm import reference
    from bitnet_tvm.schedules.cpu.int8_matmul import Int8Matmul
    from bitnet_tvm.schedules.operators.int8_matmul import int8_matmul

    target = host_target()
    ex = tvm.compile(Int8Matmul().apply(int8_matmul(vocab, hidden), target, False).mod, target)
    rng = np.random.default_rng(0)
    q_w, w_scale = reference.quantize_weights_int8_rows(
        rng.standard_normal((vocab, hidden), dtype=np.float32)
    )
    x_q, x_s = reference.quantize_act_int8(rng.standard_normal((1, hidden), dtype=np.float32))
    out = tvm.runtime.tensor(np.zeros((1, vocab), np.float32))
    args = [tvm.runtime.tensor(a) for a in (x_q, x_s, q_w, w_scale)] + [out]
    timer = ex.mod.time_evaluator("main", tvm.cpu(), number=3, repeat=10)
    t = min(timer(*args).results)
    weight_bytes = q_w.nbytes + w_scale.nbytes
    print(
        f"INT8 LM head M=1 {vocab}x{hidden}: {t * 1e3:8.2f} ms ({weight_bytes / t / 1e9:5.1f} GB/s)"
    )
    return {"m": 1, "n": vocab, "k": hidden, "us": t * 1e6, "weight_gbps": weight_bytes / t / 1e9}


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    step = result["decode_step_us"]
    axes[0].bar(list(step), list(step.values()), color=["grey", "tab:blue"])
    axes[0].set_ylabel("µs per decode step (tiny model)")
    heads = result["lm_head"]
    labels = [f"M={row['m']}" for row in heads]
    x = np.arange(len(heads))
    axes[1].bar(x - 0.2, [r["tvm_gflops"] for r in heads], 0.4, label="FloatMatmul")
    axes[1].bar(x + 0.2, [r["numpy_gflops"] for r in heads], 0.4, label="numpy")
    axes[1].set_xticks(x, labels)
    axes[1].set_ylabel(f"GFLOP/s, LM head {heads[0]['n']}x{heads[0]['k']}")
    axes[1].legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--out", default="benchmarks/results/cpu_generic_ops")
    args = parser.parse_args()
    step = decode_step_us()
    print(f"tiny decode step: before {step['before']:.1f} µs, after {step['after']:.1f} µs")
    result = {
        "machine": cpu_model(),
        "tvm_version": tvm.__version__,
        "command": " ".join(sys.argv),
        "note": "shared noisy machine: compare columns of this run only; minimum of repeats",
        "decode_step_us": step,
        "lm_head": lm_head(args.vocab),
        "lm_head_int8": lm_head_int8(args.vocab),
    }
    out = Path(args.out)
    with atomic_open(out.with_suffix(".json"), "w") as handle:
        json.dump(result, handle, indent=2)
    _plot(result, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
