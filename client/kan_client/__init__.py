"""kan_client: a small client for the KAN formula-discovery service (httpx only; pandas, tqdm and
sympy are optional extras).

    from kan_client import Client
    with Client("http://127.0.0.1:8000") as client:
        result = client.discover(df, target="y", budget=60).wait(progress=True)
        print(result.formula, result.to_pandas())
"""

from kan_client._core import DiscoveryHandle, JobHandle
from kan_client.aio import AsyncClient
from kan_client.client import Client
from kan_client.errors import (
    AuthError,
    ConflictError,
    JobFailed,
    KanError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from kan_client.results import PNG, Dataset, DiscoveryResult, Formula, FrontPoint, Job, Model

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "AuthError", "Client", "ConflictError", "Dataset", "DiscoveryHandle", "DiscoveryResult",
    "Formula", "FrontPoint", "Job", "JobFailed", "JobHandle", "KanError", "Model", "NotFoundError", "PNG",
    "RateLimitError", "ServerError", "ValidationError",
]
