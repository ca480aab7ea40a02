"""TensorIR operators of bitnet-tvm and their schedule rules, per target family."""
