"""The byte-level tokenizer: UTF-8 bytes as ids, special ids after them."""

from __future__ import annotations

import pytest

from bitnet_tvm.tokenizer import ByteTokenizer


def test_bytes_are_ids_and_roundtrip():
    tok = ByteTokenizer(256)
    assert tok.bos_id is None and tok.eos_id is None
    assert tok.encode("Hi") == [72, 105]
    text = "naïve — ünïcødé ✓"
    assert tok.encode(text) == list(text.encode("utf-8"))
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("") == []


def test_special_ids_after_the_bytes():
    tok = ByteTokenizer(260)
    assert (tok.bos_id, tok.eos_id) == (256, 257)
    assert tok.encode("a") == [256, 97]
    assert ByteTokenizer(260, add_bos=False).encode("a") == [97]
    assert tok.decode([256, 97, 257, 98, 259]) == "ab"  # special ids are skipped
    only_bos = ByteTokenizer(257)
    assert (only_bos.bos_id, only_bos.eos_id) == (256, None)


def test_invalid_utf8_decodes_to_replacement_characters():
    tok = ByteTokenizer()
    assert tok.decode([0xE2, 0x82]) == "\ufffd"
    assert tok.decode([0xE2, 0x82, 0xAC]) == "€"
    assert tok.decode([0xFF, 65]) == "\ufffdA"


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        ByteTokenizer(128)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        ByteTokenizer(256.0)
    with pytest.raises(ValueError, match=r"token id 300 is outside \[0, 256\)"):
        ByteTokenizer().decode([300])
    with pytest.raises(ValueError, match="outside"):
        ByteTokenizer().decode([-1])
    with pytest.raises(TypeError, match="text must be a str"):
        ByteTokenizer().encode(b"bytes")
