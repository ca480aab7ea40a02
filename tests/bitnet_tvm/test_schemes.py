"""Quantization schemes: presets, validation, JSON round trip, registry."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitnet_tvm import schemes
from bitnet_tvm.schemes import (
    SITES,
    ActQuant,
    EpsMode,
    KVQuant,
    QuantMethod,
    QuantScheme,
    WeightFormat,
    get_scheme,
    list_schemes,
    register_scheme,
)

PRESETS = ["a4.8", "a4.8-kv3", "a4.8-kv4", "b1.58", "fp"]
INT4_ABSMEAN = {"method": "absmean", "bits": 4, "topk": None, "eps_mode": "add", "eps": 1e-5}
INT8_ABSMAX = {"method": "absmax", "bits": 8, "topk": None, "eps_mode": "add", "eps": 1e-5}
TOPK_INT8 = {**INT8_ABSMAX, "topk": 0.5}
INT8_CLAMP = {**INT8_ABSMAX, "eps_mode": "clamp"}
NONE = {"method": "none", "bits": 8, "topk": None, "eps_mode": "add", "eps": 1e-5}


def test_presets_are_registered():
    assert set(PRESETS) <= set(list_schemes())
    assert list_schemes() == sorted(list_schemes())


@pytest.mark.parametrize(
    ("name", "sites", "weight", "kv"),
    [
        ("a4.8", (INT4_ABSMEAN, TOPK_INT8, INT4_ABSMEAN, INT8_ABSMAX), "ternary", (None, None)),
        ("a4.8-kv4", (INT4_ABSMEAN, TOPK_INT8, INT4_ABSMEAN, INT8_ABSMAX), "ternary", (4, None)),
        ("a4.8-kv3", (INT4_ABSMEAN, TOPK_INT8, INT4_ABSMEAN, INT8_ABSMAX), "ternary", (3, 4)),
        ("b1.58", (INT8_CLAMP,) * 4, "ternary", (None, None)),
        ("fp", (NONE,) * 4, "fp", (None, None)),
    ],
)
def test_preset_contents(name, sites, weight, kv):
    scheme = get_scheme(name)
    assert scheme.name == name
    assert SITES == ("qkv", "o", "gate_up", "down")
    for site, want in zip(SITES, sites, strict=True):
        assert dataclasses.asdict(scheme.site(site)) == want, site
    assert scheme.weight is WeightFormat(weight)
    assert (scheme.kv.bits, scheme.kv.bos_bits) == kv


def test_act_quant_properties():
    int4 = get_scheme("a4.8").qkv
    assert (int4.qmin, int4.qmax, int4.levels, int4.enabled) == (-8, 7, 7**0.5, True)
    int8 = get_scheme("a4.8").down
    assert (int8.qmin, int8.qmax, int8.levels, int8.enabled) == (-128, 127, 127.0, True)
    assert not get_scheme("fp").qkv.enabled


@pytest.mark.parametrize("name", PRESETS)
def test_preset_json_round_trip(name):
    scheme = get_scheme(name)
    text = scheme.to_json()
    json.loads(text)  # plain JSON
    back = QuantScheme.from_json(text)
    assert back == scheme
    assert back.to_json() == text
    assert isinstance(back.qkv.method, QuantMethod) and isinstance(back.qkv.eps_mode, EpsMode)


act_quants = st.builds(
    ActQuant,
    method=st.sampled_from(list(QuantMethod)),
    bits=st.sampled_from([4, 8]),
    topk=st.none() | st.floats(0.0, 1.0, exclude_min=True),
    eps_mode=st.sampled_from(list(EpsMode)),
    eps=st.floats(1e-12, 1.0),
)
kv_quants = st.sampled_from([KVQuant(), KVQuant(bits=4), KVQuant(bits=3, bos_bits=4), KVQuant(3)])


@settings(deadline=None, max_examples=100)
@given(
    name=st.text(max_size=12),
    weight=st.sampled_from(list(WeightFormat)),
    sites=st.tuples(act_quants, act_quants, act_quants, act_quants),
    kv=kv_quants,
)
def test_any_scheme_json_round_trip(name, weight, sites, kv):
    scheme = QuantScheme(name, weight, *sites, kv=kv)
    assert QuantScheme.from_json(scheme.to_json()) == scheme


def test_from_dict_defaults_missing_fields():
    assert QuantScheme.from_dict({"name": "x", "o": {"method": "absmax"}}) == QuantScheme(
        "x", o=ActQuant(QuantMethod.ABSMAX)
    )


def test_string_enums_are_coerced():
    act = ActQuant("absmean", bits=4, eps_mode="clamp")
    assert act.method is QuantMethod.ABSMEAN and act.eps_mode is EpsMode.CLAMP
    assert act == ActQuant(QuantMethod.ABSMEAN, 4, eps_mode=EpsMode.CLAMP)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (get_scheme("a4.8"), "qkv"),
        (get_scheme("a4.8"), "name"),
        (get_scheme("a4.8").o, "topk"),
        (get_scheme("a4.8-kv3").kv, "bits"),
    ],
)
def test_frozen(obj, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "absmax", "bits": 5}, "ActQuant.bits must be 4 or 8"),
        ({"method": "none", "bits": 2}, "ActQuant.bits must be 4 or 8"),
        ({"method": "absmax", "bits": 8.0}, "ActQuant.bits must be 4 or 8"),
        ({"method": "absmax", "bits": True}, "ActQuant.bits must be 4 or 8"),
        ({"method": "absmax", "topk": 0}, r"ActQuant.topk must be in \(0, 1\]"),
        ({"method": "absmax", "topk": 1.5}, r"ActQuant.topk must be in \(0, 1\]"),
        ({"method": "absmax", "topk": float("nan")}, r"ActQuant.topk must be in \(0, 1\]"),
        ({"method": "absmax", "eps": 0.0}, "ActQuant.eps must be positive"),
        ({"method": "absmax", "eps": float("nan")}, "ActQuant.eps must be positive"),
        ({"method": "int4"}, "QuantMethod"),
        ({"method": "absmax", "eps_mode": "sub"}, "EpsMode"),
    ],
)
def test_act_quant_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActQuant(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 2}, "KVQuant.bits must be 3, 4 or None"),
        ({"bits": 8}, "KVQuant.bits must be 3, 4 or None"),
        ({"bits": 4.0}, "KVQuant.bits must be 3, 4 or None"),
        ({"bits": 3, "bos_bits": 8}, "KVQuant.bos_bits must be 3, 4 or None"),
        ({"bos_bits": 4}, "KVQuant.bos_bits needs KVQuant.bits"),
    ],
)
def test_kv_quant_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KVQuant(**kwargs)


def test_scheme_invalid_fields():
    with pytest.raises(ValueError, match="WeightFormat"):
        QuantScheme("x", weight="int2")
    with pytest.raises(TypeError, match=r"QuantScheme.o must be an ActQuant"):
        QuantScheme("x", o={"method": "absmax"})
    with pytest.raises(TypeError, match=r"QuantScheme.kv must be a KVQuant"):
        QuantScheme("x", kv=4)
    with pytest.raises(ValueError, match="unknown BitLinear site 'lm_head'"):
        get_scheme("a4.8").site("lm_head")


def _a48_dict() -> dict:
    return json.loads(get_scheme("a4.8").to_json())


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda d: d.update(extra=1), ValueError, r"unknown scheme field\(s\) \['extra'\]"),
        (lambda d: d["o"].update(k=2), ValueError, r"unknown scheme.o field\(s\) \['k'\]"),
        (lambda d: d["kv"].update(dtype="u8"), ValueError, r"unknown scheme.kv field\(s\)"),
        (lambda d: d.pop("name"), ValueError, "missing its required field 'name'"),
        (lambda d: d["qkv"].update(bits=5), ValueError, "ActQuant.bits must be 4 or 8"),
        (lambda d: d["down"].update(topk=0), ValueError, "ActQuant.topk"),
        (lambda d: d["kv"].update(bits=2), ValueError, "KVQuant.bits"),
        (lambda d: d.update(gate_up=[4]), TypeError, "scheme.gate_up must be a JSON object"),
    ],
)
def test_from_json_invalid(edit, error, match):
    data = _a48_dict()
    edit(data)
    with pytest.raises(error, match=match):
        QuantScheme.from_json(json.dumps(data))


def test_from_json_needs_an_object():
    with pytest.raises(TypeError, match="scheme must be a JSON object, got list"):
        QuantScheme.from_json("[1, 2]")


def test_unknown_scheme_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown scheme 'a4\.4'") as info:
        get_scheme("a4.4")
    for name in PRESETS:
        assert repr(name) in str(info.value)
    with pytest.raises(TypeError, match="scheme must be a name or a QuantScheme"):
        get_scheme(4)


def test_get_scheme_passes_schemes_through():
    custom = QuantScheme("custom")
    assert get_scheme(custom) is custom


def test_registry(monkeypatch):
    monkeypatch.setattr(schemes, "_REGISTRY", dict(schemes._REGISTRY))
    preset = get_scheme("a4.8")
    with pytest.raises(ValueError, match=r"'a4\.8' is already registered"):
        register_scheme(QuantScheme("a4.8"))
    assert get_scheme("a4.8") is preset
    custom = register_scheme(QuantScheme("w1.58a4", qkv=ActQuant("absmean", 4)))
    assert get_scheme("w1.58a4") is custom
    assert "w1.58a4" in list_schemes()
    with pytest.raises(TypeError, match="register_scheme needs a QuantScheme"):
        register_scheme("a4.9")
