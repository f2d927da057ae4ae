"""Evals: verifiers that score completions (light); model evaluation imports torch on use."""
