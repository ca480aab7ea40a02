"""Trainable PyTorch BitNet model: config presets, fake quantizers, the LM and sparsity probes."""

from bitnet_tvm.model.config import BitNetConfig, get_config, list_configs
from bitnet_tvm.model.layers import ActQuantizer, BitLinear, ReLU2, RMSNorm
from bitnet_tvm.model.modeling import BitNetForCausalLM, KVCache
from bitnet_tvm.model.sparsity import measure_sparsity

__all__ = [
    "ActQuantizer",
    "BitLinear",
    "BitNetConfig",
    "BitNetForCausalLM",
    "KVCache",
    "RMSNorm",
    "ReLU2",
    "get_config",
    "list_configs",
    "measure_sparsity",
]
