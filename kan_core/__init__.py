"""kan_core: a fast, reproducible Kolmogorov-Arnold Network engine (pure PyTorch + sympy).

See docs/architecture.md for the module map and the API the service builds on. For notebooks
(docs/estimator.md): ``kan_core.KANRegressor`` (`kan_core.estimator`, a scikit-learn regressor that
runs discovery) and ``kan_core.KAN`` (`kan_core.facade`, pykan's KAN interface; the engine's
``nn.Module`` stays `kan_core.model.KAN`). Both load on first use, so importing an engine module
never imports them (nor scikit-learn).
"""

from typing import Any

__all__ = ["KAN", "KANRegressor", "create_dataset"]


def __getattr__(name: str) -> Any:
    if name == "KANRegressor":
        from kan_core.estimator import KANRegressor

        return KANRegressor
    if name in ("KAN", "create_dataset"):
        from kan_core import facade

        return getattr(facade, name)
    raise AttributeError(f"module 'kan_core' has no attribute {name!r}")
