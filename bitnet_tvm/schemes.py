"""Quantization schemes: which quantizer feeds each BitLinear, as frozen dataclasses.

A scheme says, for each of the four BitLinear input sites of a BitNet layer, how the
activations are quantized, plus how weights and the KV cache are stored.  The numeric
definitions of the quantizers live in :mod:`bitnet_tvm.reference`; this module only names
them.  Presets are looked up by name with :func:`get_scheme`:

========  ==================  ===================  =================  ===============
preset    q/k/v, gate/up      o_proj               down               KV cache
========  ==================  ===================  =================  ===============
a4.8      INT4 absmean        TopK 50% + INT8      INT8 absmax        fp
a4.8-kv4  INT4 absmean        TopK 50% + INT8      INT8 absmax        4-bit absmax
a4.8-kv3  INT4 absmean        TopK 50% + INT8      INT8 absmax        3-bit (BOS 4)
b1.58     INT8 absmax         INT8 absmax          INT8 absmax        fp
fp        none                none                 none               fp
========  ==================  ===================  =================  ===============

a4.8 follows arXiv 2411.04965 (eps added to the statistic, ``x / (stat + eps)``); b1.58
follows arXiv 2402.17764 and HF's ``BitLinear`` (``x / max(stat, eps)``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

__all__ = [
    "SITES",
    "ActQuant",
    "EpsMode",
    "KVQuant",
    "QuantMethod",
    "QuantScheme",
    "WeightFormat",
    "get_scheme",
    "list_schemes",
    "register_scheme",
]


class QuantMethod(StrEnum):
    """How an activation tensor is mapped to integers (per token, i.e. per row)."""

    NONE = "none"
    ABSMEAN = "absmean"  # scale from mean(|x|); the paper's INT4 quantizer
    ABSMAX = "absmax"  # scale from max(|x|); the INT8 quantizer


class EpsMode(StrEnum):
    """How the epsilon guards a zero statistic: ``stat + eps`` or ``max(stat, eps)``."""

    ADD = "add"
    CLAMP = "clamp"


class WeightFormat(StrEnum):
    """Linear weight storage: ternary absmean {-1, 0, 1} x alpha, or left in float."""

    TERNARY = "ternary"
    FP = "fp"


#: The four BitLinear input sites of a layer, in order.
SITES: tuple[str, ...] = ("qkv", "o", "gate_up", "down")


@dataclass(frozen=True)
class ActQuant:
    """Per-token activation quantizer of one BitLinear input.

    Parameters
    ----------
    method : QuantMethod
        ``absmean`` (INT4 in the paper), ``absmax`` (INT8) or ``none``.
    bits : int
        Signed integer width: levels are ``[-2**(bits-1), 2**(bits-1) - 1]``.
    topk : float or None
        Keep ratio of the per-token TopK by magnitude applied before quantizing, or None.
    eps_mode : EpsMode
        How the epsilon enters the scale.
    eps : float
        The epsilon.
    """

    method: QuantMethod = QuantMethod.NONE
    bits: int = 8
    topk: float | None = None
    eps_mode: EpsMode = EpsMode.ADD
    eps: float = 1e-5

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", QuantMethod(self.method))
        object.__setattr__(self, "eps_mode", EpsMode(self.eps_mode))
        if type(self.bits) is not int or self.bits not in (4, 8):
            raise ValueError(f"ActQuant.bits must be 4 or 8, got {self.bits!r}")
        if self.topk is not None and not 0.0 < self.topk <= 1.0:
            raise ValueError(f"ActQuant.topk must be in (0, 1], got {self.topk}")
        if not self.eps > 0.0:
            raise ValueError(f"ActQuant.eps must be positive, got {self.eps}")

    @property
    def enabled(self) -> bool:
        """Whether this site quantizes at all."""
        return self.method is not QuantMethod.NONE

    @property
    def qmin(self) -> int:
        """Lowest integer level."""
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        """Highest integer level."""
        return (1 << (self.bits - 1)) - 1

    @property
    def levels(self) -> float:
        """Multiplier applied to ``x / stat``: sqrt(7) for INT4 absmean, 127 for INT8 absmax.

        The paper scales INT4 absmean by sqrt(7) so that a Gaussian's mean(|x|) maps to
        about 2.1 codes; absmax maps max(|x|) to the top level.
        """
        if self.method is QuantMethod.ABSMEAN:
            return float(self.qmax) ** 0.5
        return float(self.qmax)


@dataclass(frozen=True)
class KVQuant:
    """KV-cache quantizer: per (token, head) absmax over head_dim, after RoPE.

    Parameters
    ----------
    bits : int or None
        3 or 4, or None for a float cache.
    bos_bits : int or None
        Width kept for the first token (the paper keeps BOS at 4 bits under 3-bit KV).
    """

    bits: int | None = None
    bos_bits: int | None = None

    def __post_init__(self) -> None:
        for name in ("bits", "bos_bits"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value not in (3, 4)):
                raise ValueError(f"KVQuant.{name} must be 3, 4 or None, got {value!r}")
        if self.bos_bits is not None and self.bits is None:
            raise ValueError("KVQuant.bos_bits needs KVQuant.bits")


@dataclass(frozen=True)
class QuantScheme:
    """A named quantization scheme for a whole BitNet model.

    Parameters
    ----------
    name : str
        Registry name.
    weight : WeightFormat
        BitLinear weight format.
    qkv, o, gate_up, down : ActQuant
        Activation quantizer of each BitLinear input site (see :data:`SITES`).
    kv : KVQuant
        KV-cache format.
    """

    name: str
    weight: WeightFormat = WeightFormat.TERNARY
    qkv: ActQuant = field(default_factory=ActQuant)
    o: ActQuant = field(default_factory=ActQuant)
    gate_up: ActQuant = field(default_factory=ActQuant)
    down: ActQuant = field(default_factory=ActQuant)
    kv: KVQuant = field(default_factory=KVQuant)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", WeightFormat(self.weight))
        for site in SITES:
            if not isinstance(getattr(self, site), ActQuant):
                raise TypeError(f"QuantScheme.{site} must be an ActQuant")
        if not isinstance(self.kv, KVQuant):
            raise TypeError("QuantScheme.kv must be a KVQuant")

    def site(self, site: str) -> ActQuant:
        """The activation quantizer of ``site`` (one of :data:`SITES`)."""
        if site not in SITES:
            raise ValueError(f"unknown BitLinear site {site!r}; expected one of {SITES}")
        return getattr(self, site)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (enums as their string values)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        """Serialize to a JSON string; :meth:`from_json` inverts it exactly."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantScheme:
        """Build from :meth:`to_dict` output, validating every field."""
        kwargs = _fields_of(cls, data, "scheme")
        if "name" not in kwargs:
            raise ValueError("scheme is missing its required field 'name'")
        for site in SITES:
            if site in kwargs:
                kwargs[site] = ActQuant(**_fields_of(ActQuant, kwargs[site], f"scheme.{site}"))
        if "kv" in kwargs:
            kwargs["kv"] = KVQuant(**_fields_of(KVQuant, kwargs["kv"], "scheme.kv"))
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> QuantScheme:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


def _fields_of(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data`` as keyword arguments of dataclass ``cls``; unknown keys are a ValueError."""
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {where} field(s) {sorted(unknown)}; expected {sorted(known)}")
    return dict(data)


_INT4_ABSMEAN = ActQuant(QuantMethod.ABSMEAN, bits=4)
_TOPK_INT8 = ActQuant(QuantMethod.ABSMAX, bits=8, topk=0.5)
_INT8_ABSMAX = ActQuant(QuantMethod.ABSMAX, bits=8)
_INT8_ABSMAX_CLAMP = ActQuant(QuantMethod.ABSMAX, bits=8, eps_mode=EpsMode.CLAMP)


def _a48(name: str, kv: KVQuant) -> QuantScheme:
    return QuantScheme(
        name, qkv=_INT4_ABSMEAN, o=_TOPK_INT8, gate_up=_INT4_ABSMEAN, down=_INT8_ABSMAX, kv=kv
    )


_REGISTRY: dict[str, QuantScheme] = {}


def register_scheme(scheme: QuantScheme) -> QuantScheme:
    """Add ``scheme`` to the registry under ``scheme.name`` (names are unique)."""
    if not isinstance(scheme, QuantScheme):
        raise TypeError(f"register_scheme needs a QuantScheme, got {type(scheme).__name__}")
    if scheme.name in _REGISTRY:
        raise ValueError(f"a scheme named {scheme.name!r} is already registered")
    _REGISTRY[scheme.name] = scheme
    return scheme


def get_scheme(scheme: str | QuantScheme) -> QuantScheme:
    """Return the preset named ``scheme`` (a :class:`QuantScheme` passes through).

    Raises
    ------
    ValueError
        If no preset has that name.
    """
    if isinstance(scheme, QuantScheme):
        return scheme
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a name or a QuantScheme, got {type(scheme).__name__}")
    try:
        return _REGISTRY[scheme]
    except KeyError:
        raise ValueError(f"unknown scheme {scheme!r}; known: {list_schemes()}") from None


def list_schemes() -> list[str]:
    """Names of the registered presets."""
    return sorted(_REGISTRY)


register_scheme(_a48("a4.8", KVQuant()))
register_scheme(_a48("a4.8-kv4", KVQuant(bits=4)))
register_scheme(_a48("a4.8-kv3", KVQuant(bits=3, bos_bits=4)))
register_scheme(
    QuantScheme(
        "b1.58",
        qkv=_INT8_ABSMAX_CLAMP,
        o=_INT8_ABSMAX_CLAMP,
        gate_up=_INT8_ABSMAX_CLAMP,
        down=_INT8_ABSMAX_CLAMP,
    )
)
register_scheme(QuantScheme("fp", weight=WeightFormat.FP))
