"""CUDA (sm_80, sm_90) schedule rules, one workload per file."""
