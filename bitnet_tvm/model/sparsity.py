"""Activation sparsity of a BitNet model, as in the a4.8 paper's Table 2.

Per site, the share (in %) of exactly-zero entries of the quantized BitLinear input codes:

* ``qkv``: input of q/k/v (one shared input), ``gate``: input of gate/up, ``o``: input of o_proj
  (after TopK), ``down``: input of down_proj;
* ``up``: share of up-projection outputs that the gate-first trick skips, i.e. entries where
  ``relu(gate)**2`` is exactly zero;
* ``overall``: ``1 -`` share of BitLinear parameters activated, each site weighted by the weights
  its input multiplies (q+k+v, o, gate, up, down; the embedding and LM head are not counted).

Sites that a scheme leaves unquantized report the zeros of their float input.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from bitnet_tvm.model.layers import BitLinear, ReLU2
from bitnet_tvm.model.modeling import BitNetForCausalLM

__all__ = ["SPARSITY_KEYS", "measure_sparsity"]

#: Keys of :func:`measure_sparsity`'s result.
SPARSITY_KEYS: tuple[str, ...] = ("qkv", "o", "gate", "up", "down", "overall")

# module attribute name -> (site measured through it or None, site whose zeros skip its weights)
_LINEARS = {
    "q_proj": ("qkv", "qkv"),
    "k_proj": (None, "qkv"),
    "v_proj": (None, "qkv"),
    "o_proj": ("o", "o"),
    "gate_proj": ("gate", "gate"),
    "up_proj": (None, "up"),
    "down_proj": ("down", "down"),
}


def measure_sparsity(model: BitNetForCausalLM, input_ids: torch.Tensor) -> dict[str, float]:
    """Run ``model`` on ``input_ids`` and return the per-site zero shares in percent.

    Parameters
    ----------
    model : BitNetForCausalLM
        The model (left in its training mode; run without gradients).
    input_ids : Tensor of int64, shape ``[batch, seq]``
        Tokens to run.

    Returns
    -------
    dict
        Keys :data:`SPARSITY_KEYS`, values in [0, 100], averaged over all layers and tokens.
    """
    if not isinstance(model, BitNetForCausalLM):
        raise TypeError(f"model must be a BitNetForCausalLM, got {type(model).__name__}")
    zeros: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    params: dict[str, int] = defaultdict(int)

    def counter(site: str):
        def hook(_module, _inputs, output) -> None:
            codes = output[0] if isinstance(output, tuple) else output
            zeros[site] += int((codes == 0).sum())
            total[site] += codes.numel()

        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            attr = name.rsplit(".", 1)[-1]
            if isinstance(module, BitLinear) and attr in _LINEARS:
                measured, weighted = _LINEARS[attr]
                params[weighted] += module.weight.numel()
                if measured is not None:
                    handles.append(module.act_quant.register_forward_hook(counter(measured)))
            elif isinstance(module, ReLU2):
                handles.append(module.register_forward_hook(counter("up")))
        with torch.no_grad():
            model(input_ids)
    finally:
        for handle in handles:
            handle.remove()

    result = {site: 100.0 * zeros[site] / total[site] for site in SPARSITY_KEYS[:-1]}
    skipped = sum(n * result[site] for site, n in params.items())
    result["overall"] = skipped / sum(params.values())
    return result
