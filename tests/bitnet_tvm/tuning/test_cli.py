"""``bitnet-tvm tune``: help text, and a one-trial run over a tiny exported model."""

from __future__ import annotations

import json

import pytest

from bitnet_tvm.cli import main
from bitnet_tvm.export import export_onnx
from bitnet_tvm.model import BitNetForCausalLM, get_config


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--target", "--trials", "--db", "--rpc", "--device-key", "--no-roofline"):
        assert option in out


def test_tiny_tune_then_cached(tmp_path, capsys):
    model = BitNetForCausalLM(get_config("tiny", scheme="a4.8"), seed=0).eval()
    onnx_path = export_onnx(model, tmp_path / "tiny.onnx", verify=False)
    # one tunable operator kind keeps the run short (the API tests cover the rest)
    ops = "ternary_int4_gate_up,ternary_int8_gate_up,norm_quantize"
    argv = ["tune", str(onnx_path), "--trials", "1", "--buckets", "decode", "--no-roofline"]
    argv += ["--ops", ops, "--db"]
    assert main([*argv, str(tmp_path / "db"), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    kinds = {task["kernel"].split()[0] for task in first["tasks"]}
    assert kinds == {"norm_quantize", "ternary_int4_gate_up"}
    assert first["tuned_now"] >= 1
    assert main([*argv, str(tmp_path / "db")]) == 0
    table = capsys.readouterr().out
    assert "0 task(s) tuned" in table and "default µs" in table
    assert main(["tune", str(onnx_path), "--trials", "0"]) == 2  # a clear one-line error
    assert "trials must be a positive int" in capsys.readouterr().err
