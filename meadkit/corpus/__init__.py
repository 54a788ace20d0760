"""Knowledge of MEAD: names, layout quirks, archives, probing, and the synthetic corpus."""
