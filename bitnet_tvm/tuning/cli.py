"""``bitnet-tvm tune``: the command-line shell over :func:`bitnet_tvm.tune`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``tune`` sub-command to ``sub`` (an argparse sub-parsers object)."""
    tune = sub.add_parser(
        "tune",
        help="autotune the model's kernels with MetaSchedule into a tuning database",
        description="Tune every distinct fused operator of an ONNX BitNet model, per token-count "
        "bucket, with MetaSchedule over bitnet-tvm's schedule templates; results go to a "
        "persistent database that `compile --tuning-db` (compile_model(tuning_db=...)) uses. "
        "A second run over the same model and target finds everything in the database.",
    )
    tune.add_argument("model", help="ONNX model file")
    tune.add_argument("--target", "-t", default="llvm", help="llvm (this CPU), cuda, or a target")
    tune.add_argument(
        "--trials", type=int, default=16, help="candidates per kernel and bucket (default 16)"
    )
    tune.add_argument(
        "--db",
        default=None,
        help="database directory (default $XDG_CACHE_HOME/bitnet-tvm/tuning, "
        "~/.cache/bitnet-tvm/tuning)",
    )
    tune.add_argument("--rpc", default=None, metavar="HOST:PORT", help="TVM RPC tracker address")
    tune.add_argument("--device-key", default=None, help="device key registered with the tracker")
    tune.add_argument(
        "--buckets",
        default="all",
        help="comma-separated token-count buckets: decode, small, medium, prefill (default all)",
    )
    tune.add_argument(
        "--ops", default=None, help="comma-separated operator names to tune (default all)"
    )
    tune.add_argument("--scheme", default=None, help="re-quantize with this scheme (as compile)")
    tune.add_argument("--json", action="store_true", help="print the report as JSON")
    tune.add_argument("--seed", type=int, default=0, help="seed of the search")
    tune.add_argument(
        "--no-roofline",
        dest="roofline",
        action="store_false",
        help="skip the roofline column (measuring the roofs takes ~5 s the first time)",
    )
    tune.set_defaults(func=run)
    return tune


def run(args: argparse.Namespace) -> dict | str:
    """Run ``tune`` for parsed ``args``; the report (JSON dict or the summary table)."""
    from bitnet_tvm.tuning.tuner import tune

    report = tune(
        args.model,
        args.target,
        trials=args.trials,
        db=args.db,
        rpc=args.rpc,
        device_key=args.device_key,
        buckets=args.buckets,
        ops=args.ops,
        scheme=args.scheme,
        progress=sys.stderr.isatty(),
        seed=args.seed,
        roofline=args.roofline,
    )
    return report.to_dict() if args.json else str(report)
