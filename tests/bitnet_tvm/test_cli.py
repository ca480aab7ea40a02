"""The command line, in process: compile -> run / info, and its errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import bitnet_tvm
from bitnet_tvm.cli import main
from bitnet_tvm.export import export_onnx
from bitnet_tvm.generate import Generator
from bitnet_tvm.model import BitNetForCausalLM, get_config
from bitnet_tvm.schedules.layouts import packed_shape
from bitnet_tvm.tokenizer import ByteTokenizer

PROMPT = "Hello, BitNet"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    path = root / "tiny_past.bitnet"
    # the API export skips the onnxruntime check (covered in test_export) to save ~10 s
    model = BitNetForCausalLM(get_config("tiny"), seed=0).eval()
    onnx_path = export_onnx(model, root / "tiny_past.onnx", with_past=True, verify=False)
    assert main(["compile", str(onnx_path), "-o", str(path), "--config", "tiny"]) == 0
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_prints_the_greedy_continuation(artifact, capsys):
    code, out, _ = _run(capsys, "run", str(artifact), "--prompt", PROMPT, "-n", "10")
    assert code == 0
    tokenizer = ByteTokenizer(256)
    result = Generator(bitnet_tvm.load(artifact)).generate(
        tokenizer.encode(PROMPT), max_new_tokens=10
    )
    want = tokenizer.decode(result.tokens[0])
    # C0/C1 control characters other than newline and tab are printed escaped
    control = {*range(32), *range(127, 160)} - {9, 10}
    want = "".join(f"\\x{ord(c):02x}" if ord(c) in control else c for c in want)
    assert out == want + "\n"


def test_run_stream_prints_the_same_text(artifact, capsys):
    base = ["run", str(artifact), "--prompt", PROMPT, "-n", "12", "--temperature", "0.8"]
    code, out, _ = _run(capsys, *base, "--top-p", "0.9", "--seed", "4")
    assert code == 0
    code, streamed, _ = _run(capsys, *base, "--top-p", "0.9", "--seed", "4", "--stream")
    assert code == 0 and streamed == out
    code, other, _ = _run(capsys, *base, "--top-p", "0.9", "--seed", "5")
    assert code == 0 and other != out  # the seed matters


def test_info_describes_the_artifact(artifact, capsys):
    code, out, _ = _run(capsys, "info", str(artifact))
    assert code == 0
    for text in (
        "past_key.0",
        "present_value.1",
        "generation yes (KV cache 512 bytes per token",  # 2 layers x K,V x 2 heads x 16 x 4 B
        "layers_0_qkv_proj",
        "ternary_int4_gate_up",
        "2bit_kmajor",
        "packed ternary weights (uint8)",
        "max_position_embeddings 512",
        "tvm 0.27",
    ):
        assert text in out, text
    code, out, _ = _run(capsys, "info", str(artifact), "--json")
    assert code == 0
    info = json.loads(out)
    want_packed = sum(
        int(np.prod(packed_shape(r["n"], r["k"], r["layout"]))) for r in info["layers"]
    )
    assert info["params"]["packed ternary weights (uint8)"]["bytes"] == want_packed
    with np.load(artifact / "params.npz") as params:
        assert info["param_bytes"] == sum(params[name].nbytes for name in params.files)
    assert info["total_bytes"] == info["param_bytes"] + (artifact / "model.so").stat().st_size
    assert info["model"]["vocab_size"] == 256 and info["generation"] is True


def _one_line_error(capsys, *argv: str) -> str:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"bitnet-tvm {argv[0]}: error: ")
    return last


def test_errors_are_one_line_with_exit_code_2(artifact, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    assert "model.so is missing" in _one_line_error(capsys, "run", missing, "--prompt", "x")
    assert "metadata.json is missing" in _one_line_error(capsys, "info", missing)
    assert "--prompt is empty" in _one_line_error(capsys, "run", str(artifact), "--prompt", "")
    long = "x" * 600
    assert "maximum length 512" in _one_line_error(capsys, "run", str(artifact), "-p", long)
    assert "top_p must lie in" in _one_line_error(
        capsys, "run", str(artifact), "-p", "x", "--top-p", "2"
    )
    no_past = tmp_path / "no_past"
    shutil.copytree(artifact, no_past)
    meta = json.loads((no_past / "metadata.json").read_text())
    meta["inputs"] = meta["inputs"][:1]
    (no_past / "metadata.json").write_text(json.dumps(meta))
    assert "export with past" in _one_line_error(capsys, "run", str(no_past), "-p", "x")
    assert "unknown config" in _one_line_error(
        capsys, "compile", "m.onnx", "-o", str(tmp_path / "a"), "--config", "nope"
    )


@pytest.mark.parametrize("command", [[], ["demo"], ["export"], ["compile"], ["run"], ["info"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: bitnet-tvm" in capsys.readouterr().out
