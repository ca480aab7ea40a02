"""``bitnet-tvm bench``: the command-line shell over :func:`bitnet_tvm.bench.run_benchmark`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

_RESULTS = Path("benchmarks/results")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    bench = sub.add_parser(
        "bench",
        help="compiled model vs onnxruntime, PyTorch and TVM's unrewritten build",
        description="Export a random-weight BitNet model of a preset's shape (with past "
        "key/values), compile it with bitnet-tvm (a4.8 and b1.58) and with TVM's default build "
        "of the unrewritten graph, and time prefill and greedy decode of every backend on the "
        "same ONNX file and prompts; also peak memory, weight and KV bytes, the LM head apart "
        "from the layers, and the paper's memory/speed claims. Writes JSON and a PNG chart.",
    )
    bench.add_argument("--model", default="tiny", help="config preset: tiny (smoke), 2b4t, ...")
    bench.add_argument(
        "--layers", type=int, default=None, help="decoder layers (default: the preset's)"
    )
    bench.add_argument("--prompt-len", "-P", type=int, default=32, help="prompt tokens (prefill)")
    bench.add_argument("--decode-steps", "-N", type=int, default=32, help="greedy decode steps")
    bench.add_argument("--batch", type=int, default=1, help="sequences per run")
    bench.add_argument("--repeats", type=int, default=3, help="rounds; the best time is kept")
    bench.add_argument(
        "--backends",
        default="bitnet_a4.8,bitnet_b1.58,tvm_fp32,onnxruntime,pytorch",
        help="comma-separated subset of the default (onnxruntime is required); add "
        "bitnet_a4.8_1.6bit (1.6-bit weights) and bitnet_a4.8_compact (1.6-bit weights, 3-bit KV, "
        "INT8 LM head) for the smaller a4.8 builds",
    )
    bench.add_argument("--seed", type=int, default=0, help="seed of the weights and prompts")
    bench.add_argument(
        "--workdir", default="artifacts/bench", help="exports and artifacts (reused across runs)"
    )
    bench.add_argument("--target", default="llvm", help="target of the compiled backends")
    bench.add_argument(
        "--output",
        "-o",
        default=None,
        help="JSON file to write (default benchmarks/results/bench_<model>_cpu.json); the PNG "
        "chart goes beside it",
    )
    bench.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    bench.add_argument(
        "--in-process",
        action="store_true",
        help="export and compile in this process, not in child processes (quicker for tiny "
        "models; the memory numbers then include what compiling left behind)",
    )
    bench.set_defaults(func=run)
    return bench


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark of ``args``; print the table (stderr) and return the written paths."""
    from bitnet_tvm.bench.harness import BenchSpec, run_benchmark
    from bitnet_tvm.bench.report import build_report, format_table, write_json, write_png

    spec = BenchSpec(
        model=args.model,
        layers=args.layers,
        prompt_len=args.prompt_len,
        decode_steps=args.decode_steps,
        batch=args.batch,
        repeats=args.repeats,
        backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
        seed=args.seed,
        workdir=Path(args.workdir),
        target=args.target,
        isolate=not args.in_process,
    )
    output = Path(args.output) if args.output else _RESULTS / f"bench_{args.model}_cpu.json"
    if output.suffix != ".json":
        raise ValueError(f"--output must name a .json file, got {str(output)!r}")
    command = _command(spec, output, args)
    report = build_report(run_benchmark(spec), command)
    print(format_table(report), file=sys.stderr)
    written = {"json": str(write_json(report, output))}
    if not args.no_plot:
        written["png"] = str(write_png(report, output.with_suffix(".png")))
    return written


def _command(spec: Any, output: Path, args: argparse.Namespace) -> str:
    """The command line that repeats this run (every setting spelled out)."""
    argv = ["bitnet-tvm", "bench", "--model", spec.model]
    if spec.layers is not None:
        argv += ["--layers", str(spec.layers)]
    argv += ["--prompt-len", str(spec.prompt_len), "--decode-steps", str(spec.decode_steps)]
    argv += ["--batch", str(spec.batch), "--repeats", str(spec.repeats), "--seed", str(spec.seed)]
    argv += ["--backends", ",".join(spec.backends), "--target", spec.target]
    argv += ["--workdir", str(spec.workdir), "--output", str(output)]
    argv += ["--in-process"] if args.in_process else []
    argv += ["--no-plot"] if args.no_plot else []
    return shlex.join(argv)
