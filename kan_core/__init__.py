"""kan_core: a fast, reproducible Kolmogorov-Arnold Network engine (pure PyTorch + sympy).

See docs/architecture.md for the module map and the API the service builds on.
"""
