"""Relax graph passes that rewrite BitNet graphs into fused ternary operators.

One pass per file; :mod:`bitnet_tvm.relay_passes.pipeline` owns their order.  (The package keeps
the name "relay" for history: TVM's graph level is Relax now.)
"""
