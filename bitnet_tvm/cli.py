"""The ``bitnet-tvm`` command line.

Each sub-command is a thin shell over the Python API: it parses arguments, calls one function,
and prints its result.  Errors a user can fix are printed as one line (exit code 2); add
``--verbose`` for the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bitnet_tvm.errors import BitnetError

__all__ = ["main"]

_USER_ERRORS = (BitnetError, ValueError, TypeError, FileNotFoundError, KeyError)


def _cmd_demo(args: argparse.Namespace) -> dict:
    from bitnet_tvm.demo import run_demo

    return run_demo(Path(args.workdir), scheme=args.scheme, seed=args.seed)


def _cmd_export(args: argparse.Namespace) -> dict:
    from bitnet_tvm.export import export_onnx
    from bitnet_tvm.model import BitNetConfig, BitNetForCausalLM, get_config

    overrides = {"scheme": args.scheme} if args.scheme else {}
    if Path(args.config).is_file():
        config = BitNetConfig.from_hf_config(json.loads(Path(args.config).read_text()))
        config = config.replace(**overrides)
    else:
        config = get_config(args.config, **overrides)
    model = BitNetForCausalLM(config, seed=args.seed)
    path = export_onnx(
        model, Path(args.output), with_past=args.with_past, weights=args.weights, verify=True
    )
    return {"onnx": str(path), "config": config.to_dict()}


def _cmd_compile(args: argparse.Namespace) -> dict:
    from bitnet_tvm.compiler import compile_model

    compiled = compile_model(args.model, target=args.target, scheme=args.scheme)
    path = compiled.save(args.output)
    print(compiled.report, file=sys.stderr)
    return {"artifact": str(path), "unfused_matmuls": compiled.report.unfused_matmuls}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitnet-tvm",
        description="Compile and run BitNet 1-bit LLMs (a4.8, b1.58) with Apache TVM.",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="show tracebacks and debug logs"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="the main job on the built-in model: build, export, check against onnxruntime",
        description="Build the built-in BitNet model, export it to ONNX, check it with "
        "onnxruntime, and (where the compiler supports it) compile and run it with TVM.",
    )
    demo.add_argument("--workdir", default="artifacts/demo", help="where files are written")
    demo.add_argument("--scheme", default="a4.8", help="quantization scheme preset")
    demo.add_argument("--seed", type=int, default=0, help="seed of the built-in random model")
    demo.set_defaults(func=_cmd_demo)

    export = sub.add_parser(
        "export",
        help="export a BitNet model to ONNX",
        description="Export our PyTorch BitNet model (a config preset name or an HF-style "
        "config.json) to ONNX with dynamic batch and sequence, verified with onnxruntime.",
    )
    export.add_argument("config", help="config preset (tiny, 2b4t, 700m, ...) or config.json path")
    export.add_argument("--output", "-o", required=True, help="ONNX file to write")
    export.add_argument("--scheme", default=None, help="quantization scheme (default: config's)")
    export.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    export.add_argument("--with-past", action="store_true", help="add past key/value inputs")
    export.add_argument(
        "--weights",
        choices=["master", "ternary"],
        default="master",
        help="master weights with ternarization in the graph, or pre-ternarized constants",
    )
    export.set_defaults(func=_cmd_export)

    comp = sub.add_parser(
        "compile",
        help="compile an ONNX BitNet model to an artifact directory",
        description="Import an ONNX BitNet model, rewrite its BitLinears into fused ternary "
        "operators, build it for --target and save the artifact (library, params, metadata).",
    )
    comp.add_argument("model", help="ONNX file")
    comp.add_argument("--output", "-o", required=True, help="artifact directory to write")
    comp.add_argument("--target", default="llvm", help="llvm (host CPU), cuda, or a TVM target")
    comp.add_argument("--scheme", default=None, help="re-quantize with this scheme preset")
    comp.set_defaults(func=_cmd_compile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bitnet-tvm`` command line; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    # Progress from our own loggers; third-party chatter (onnxscript, torch.onnx) only if -v.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("bitnet_tvm").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    func: Callable[[argparse.Namespace], dict] = args.func
    try:
        result = func(args)
    except _USER_ERRORS as err:
        if args.verbose:
            raise
        print(f"bitnet-tvm {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
