"""Training of compact students with online self-distillation (POSD, OSKD) and the baselines."""
