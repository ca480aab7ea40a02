"""``bitnet-tvm compile --lm-head``: the option reaches compile_model; bad values are refused."""

from __future__ import annotations

import pytest

import bitnet_tvm.compiler
from bitnet_tvm.cli import main


def test_lm_head_option_reaches_compile_model(compile_calls, tmp_path):
    seen = compile_calls
    assert main(["compile", "m.onnx", "-o", str(tmp_path / "a"), "--lm-head", "int8"]) == 0
    assert seen["lm_head"] == "int8"
    assert main(["compile", "m.onnx", "-o", str(tmp_path / "b")]) == 0
    assert seen["lm_head"] == "fp32"


def test_bad_lm_head_value_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compile", "m.onnx", "-o", "out", "--lm-head", "int4"])
    assert exc.value.code != 0
    assert "--lm-head" in capsys.readouterr().err


def test_compile_model_rejects_bad_lm_head_before_importing(tmp_path):
    with pytest.raises(ValueError, match="lm_head must be one of"):
        bitnet_tvm.compiler.compile_model(tmp_path / "missing.onnx", lm_head="int4")
    with pytest.raises(ValueError, match="needs rewrite=True"):
        bitnet_tvm.compiler.compile_model(tmp_path / "missing.onnx", lm_head="int8", rewrite=False)
