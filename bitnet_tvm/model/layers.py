"""Building blocks of the BitNet model: RMSNorm, ReLU², the activation quantizer and BitLinear."""

from __future__ import annotations

import torch
from torch import nn

from bitnet_tvm.model.quant import quantize_activation, quantize_weight_ternary
from bitnet_tvm.schemes import ActQuant, QuantScheme, WeightFormat

__all__ = ["ActQuantizer", "BitLinear", "RMSNorm", "ReLU2"]


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last axis, in the reference's op order."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = torch.mean(x * x, dim=-1, keepdim=True)
        inv = torch.reciprocal(torch.sqrt(var + torch.tensor(self.eps, dtype=torch.float32)))
        return x * inv * self.weight


class ReLU2(nn.Module):
    """Squared ReLU, the GLU activation of BitNet (a module so that sparsity hooks can see it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        return r * r


class ActQuantizer(nn.Module):
    """Per-token activation quantizer of one BitLinear input site.

    ``forward(x)`` returns ``(codes, scale)`` (see
    :func:`~bitnet_tvm.model.quant.quantize_activation`), or ``(x, None)`` when the site is not
    quantized.
    """

    def __init__(self, act: ActQuant) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.act.enabled:
            return x, None
        return quantize_activation(x, self.act)

    def extra_repr(self) -> str:
        return repr(self.act)


class BitLinear(nn.Linear):
    """Bias-free linear with quantized input and (optionally) ternary weights.

    ``y = (x_codes @ w_codes.T) * act_scale * alpha``, the reference ``ternary_matmul`` order;
    the matmul of integer-valued float32 operands is exact (sums stay far below 2**24), so
    outputs match the reference's int32 accumulation bit for bit when codes match.  Unquantized
    parts (scheme ``fp``) drop their scale.

    Parameters
    ----------
    in_features, out_features : int
        Sizes.
    scheme : QuantScheme
        Model scheme: gives the weight format and this site's activation quantizer.
    site : str
        One of :data:`bitnet_tvm.schemes.SITES` (``qkv``, ``o``, ``gate_up``, ``down``).
    """

    def __init__(self, in_features: int, out_features: int, scheme: QuantScheme, site: str) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.site = site
        self.ternary = scheme.weight is WeightFormat.TERNARY
        self.act_quant = ActQuantizer(scheme.site(site))
        self.frozen = False

    @property
    def int8_codes(self) -> bool:
        """Whether the weight is stored as int8 codes (see :meth:`freeze_int8`)."""
        return self.weight.dtype == torch.int8

    def quantized_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(codes, alpha)`` for ternary weights, ``(weight, None)`` for float ones."""
        if self.frozen:
            if self.int8_codes:
                return self.weight.to(torch.float32), self.weight_scale
            return self.weight, self.weight_scale
        if self.ternary:
            return quantize_weight_ternary(self.weight)
        return self.weight, None

    @torch.no_grad()
    def freeze_ternary(self) -> None:
        """Replace the master weight by its ternary codes (float {-1, 0, 1}) and a scalar
        ``weight_scale`` buffer; the layer is then inference-only.  No-op for float weights."""
        if not self.ternary or self.frozen:
            return
        codes, alpha = quantize_weight_ternary(self.weight)
        self.weight = nn.Parameter(codes.contiguous(), requires_grad=False)
        self.register_buffer("weight_scale", alpha.clone())
        self.frozen = True

    @torch.no_grad()
    def freeze_int8(self) -> None:
        """Like :meth:`freeze_ternary`, but store the codes as an int8 ``[out, in]`` weight (a
        quarter of the float32 size); ``forward`` casts them to float32 before the matmul, so
        outputs are unchanged bit for bit.  No-op for float weights."""
        if not self.ternary or (self.frozen and self.int8_codes):
            return
        self.freeze_ternary()
        self.weight = nn.Parameter(self.weight.to(torch.int8), requires_grad=False)

    def set_scheme(self, scheme: QuantScheme) -> None:
        """Switch this layer's activation quantizer to ``scheme``'s for its site (in place).

        Weights are untouched, so ``scheme`` must have this layer's weight format.

        Raises
        ------
        ValueError
            If ``scheme``'s weights are ternary and this layer's are float, or the reverse.
        """
        if not isinstance(scheme, QuantScheme):
            raise TypeError(f"scheme must be a QuantScheme, got {type(scheme).__name__}")
        if (scheme.weight is WeightFormat.TERNARY) != self.ternary:
            have = "ternary" if self.ternary else "float"
            raise ValueError(
                f"scheme {scheme.name!r} has {scheme.weight.value} weights; this {self.site} "
                f"BitLinear has {have} weights (a weight format cannot be switched in place)"
            )
        self.act_quant.act = scheme.site(self.site)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, a_scale = self.act_quant(x)
        w, w_scale = self.quantized_weight()
        y = nn.functional.linear(a, w)
        if a_scale is not None:
            y = y * a_scale
        if w_scale is not None:
            y = y * w_scale
        return y

    def extra_repr(self) -> str:
        flags = f"site={self.site}, ternary={self.ternary}, frozen={self.frozen}"
        return f"{super().extra_repr()}, {flags}"
