"""CPU (x86 AVX-512 / AVX2, generic LLVM) schedule rules, one workload per file."""
