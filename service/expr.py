"""The whitelist formula parser, for the service's imports: it lives in kan_core.expr, where the
engine's own formula readers (kan_core.discovery) use it too."""

from kan_core.expr import *  # noqa: F401,F403
from kan_core.expr import __all__  # noqa: F401
