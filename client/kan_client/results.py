"""Plain result objects built from the service's JSON. Each keeps the raw answer in `.data`.

Methods that need the service (`predict`, `plot`...) go through the client the object came from:
with an AsyncClient they return awaitables. `to_pandas()` needs pandas, `sympy()` needs sympy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kan_client.formula import to_sympy

if TYPE_CHECKING:
    from kan_client._core import BaseClient


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("to_pandas() needs pandas: pip install 'kan-client[pandas]'") from None
    return pandas


class PNG(bytes):
    """PNG bytes that Jupyter shows inline."""

    def _repr_png_(self) -> bytes:
        return bytes(self)

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self)


@dataclass
class Dataset:
    id: str
    name: str | None
    feature_names: list[str]
    target_names: list[str]
    n_train: int
    n_test: int
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Dataset:
        return cls(data["id"], data.get("name"), list(data.get("feature_names") or []),
                   list(data.get("target_names") or []), int(data.get("n_train", 0)), int(data.get("n_test", 0)), data)

    @property
    def units(self) -> dict[str, str] | None:
        """Every column's unit, when the dataset has units."""
        return self.data.get("units")


@dataclass
class Job:
    id: str
    kind: str
    status: str
    dataset_id: str
    model_id: str | None
    progress: dict[str, Any] | None
    error: dict[str, Any] | None
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Job:
        return cls(data["id"], data.get("kind", ""), data["status"], data.get("dataset_id", ""), data.get("model_id"),
                   data.get("progress"), data.get("error"), data)


@dataclass
class Formula:
    """One closed-form formula: a model's output, or a point of a discovery's front."""

    text: str
    latex_text: str
    variables: list[str]
    complexity: int | None = None
    test_rmse: float | None = None
    r2: float | None = None
    name: str | None = None
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Formula:
        return cls(text=data.get("text") or data.get("formula") or "", latex_text=data.get("latex") or "",
                   variables=list(data.get("variables") or []), complexity=data.get("complexity"),
                   test_rmse=data.get("test_rmse", data.get("rmse")), r2=data.get("r2"), name=data.get("name"),
                   data=data)

    def sympy(self) -> Any:
        return to_sympy(self.text, self.variables)

    def latex(self) -> str:
        return self.latex_text

    def __str__(self) -> str:
        return self.text


class Model:
    """A trained model: metadata, formulas, and calls for predictions, splines, plot and artifact."""

    def __init__(self, client: BaseClient, data: dict[str, Any]):
        self._client = client
        self.data = data
        self.id: str = data["id"]
        self.job_id: str = data.get("job_id", "")
        self.dataset_id: str = data.get("dataset_id", "")
        self.width: list[int] = list(data.get("width") or [])
        self.metrics: dict[str, Any] = data.get("metrics") or {}
        self.formulas: list[Formula] = [Formula.of(f) for f in data.get("formulas") or []]

    def __repr__(self) -> str:
        return f"Model(id={self.id!r}, width={self.width}, formulas={[f.text for f in self.formulas]})"

    def predict(self, x: Any, mode: str = "network") -> Any:
        """Outputs for rows `x` (array, DataFrame with named columns, records): one row per input row."""
        return self._client.predict(self.id, x, mode=mode)

    def formula(self, format: str | None = None) -> Any:
        """The formulas (list of Formula), or as `format`: sympy | latex | python | numpy | torch code."""
        return self._client.formula(self.id, format=format)

    def splines(self, n_points: int = 101) -> Any:
        return self._client.splines(self.id, n_points=n_points)

    def plot(self) -> Any:
        return self._client.plot(self.id)

    def download(self, path: str | None = None) -> Any:
        """The safetensors artifact (bytes), also written to `path` when given."""
        return self._client.artifact(self.id, path=path)

    def sympy(self) -> Any:
        exprs = [f.sympy() for f in self.formulas]
        return exprs[0] if len(exprs) == 1 else exprs

    def latex(self) -> str:
        return "\n".join(f.latex() for f in self.formulas)

    def to_pandas(self) -> Any:
        """The formulas as a DataFrame: one row per output (name, formula, complexity, test R², RMSE)."""
        return _pandas().DataFrame([{"output": f.data.get("output", j), "name": f.name, "formula": f.text,
                                     "complexity": f.complexity, "r2": f.r2, "rmse": f.test_rmse}
                                    for j, f in enumerate(self.formulas)])


@dataclass
class FrontPoint(Formula):
    job_id: str = ""
    candidate: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, data: dict[str, Any]) -> FrontPoint:
        base = Formula.of(data)
        return cls(**{**base.__dict__, "job_id": data.get("job_id", ""), "candidate": data.get("candidate") or {}})


class DiscoveryResult:
    """A discovery's state: status, progress, the Pareto front (simplest first) and the chosen formula."""

    def __init__(self, client: BaseClient, data: dict[str, Any]):
        self._client = client
        self.data = data
        self.id: str = data["id"]
        self.status: str = data["status"]
        self.dataset_id: str = data.get("dataset_id", "")
        self.reason: str | None = data.get("reason")
        self.progress: dict[str, Any] | None = data.get("progress")
        self.error: dict[str, Any] | None = data.get("error")
        self.front: list[FrontPoint] = [FrontPoint.of(p) for p in data.get("front") or []]
        self.chosen: FrontPoint | None = FrontPoint.of(data["chosen"]) if data.get("chosen") else None

    def __repr__(self) -> str:
        return (f"DiscoveryResult(id={self.id!r}, status={self.status!r}, "
                f"chosen={self.chosen.text if self.chosen else None!r}, front={len(self.front)})")

    @property
    def formula(self) -> str | None:
        return self.chosen.text if self.chosen else None

    def _chosen(self) -> FrontPoint:
        if self.chosen is None:
            raise ValueError(f"discovery {self.id} ({self.status}) has no chosen formula")
        return self.chosen

    def sympy(self) -> Any:
        return self._chosen().sympy()

    def latex(self) -> str:
        return self._chosen().latex()

    def predict(self, x: Any, point: int | None = None) -> Any:
        """The chosen formula (or front[point]) evaluated by the service on rows `x`."""
        return self._client.predict_discovery(self.id, x, point=point)

    def to_pandas(self) -> Any:
        """The front as a DataFrame: one row per formula, simplest first, `chosen` marking the choice."""
        pandas = _pandas()
        chosen_job = self.chosen.job_id if self.chosen else None
        return pandas.DataFrame([{"complexity": p.complexity, "test_rmse": p.test_rmse, "r2": p.r2,
                                  "formula": p.text, "chosen": p.job_id == chosen_job, "job_id": p.job_id,
                                  "candidate": p.candidate.get("id")} for p in self.front])
