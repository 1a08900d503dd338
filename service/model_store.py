"""Serving trained models: Model rows -> loaded kan_core networks, compiled formulas, edge data, plots.

Model rows never change after the worker writes them (they are only deleted), so everything derived
from a row is cached under the row's id: the deserialised network, the lambdified formulas, the edge
data and the PNG. The caches are bounded LRUs, safe to use from FastAPI's threadpool, and build each
key once even when many requests miss at the same time. Every request reads the row first (a
primary-key lookup that leaves the weights blob behind, scoped to the caller's tenant), so a tenant
never reaches another tenant's cached model. Predict, the hot path, reuses that row for
`lookup_cache_ttl_s` seconds (`ModelStore.model_row`, cached per tenant and id): a model deleted by
another process is served at most that much longer; one deleted through this process, not at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy
import torch
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, defer

from kan_core import formula as kan_formula
from kan_core import inspect as kan_inspect
from kan_core import io as kan_io
from kan_core import metrics as kan_metrics
from kan_core import plot as kan_plot
from kan_core.frozen import FrozenKAN
from kan_core.model import KAN
from service import datasets
from service.cache import LRUCache, TTLCache
from service.db import begin_read
from service.errors import Conflict, NotFound
from service.expr import STORED_LIMITS
from service.expr import parse as parse_expression
from service.models import Dataset, Job, JobStatus, Model
from service.rows import json_ready, rows_json, validate_inputs
from service.schemas.common import decode_cursor, split_page
from service.schemas.models import PredictMode
from service.tenancy import get_owned, owned

log = logging.getLogger(__name__)

SAMPLE_ROWS = 1_000  # training rows behind spline curves, importances and plots
# predictions whose largest temporary (rows x inputs x knots of the widest layer) is at most this many
# values use kan_core.frozen (numpy) rather than torch: ~500 rows of a [2, 5, 1] grid-5 network
FROZEN_MAX_CELLS = 2**15
INLINE_PREDICT_ROWS = 32  # predictions this small run on the event loop once their model is cached
_MISSING = object()


# --------------------------------------------------------------------------------------------------
# queries


def end_read(session: Session) -> None:
    """End the session's read transaction. On SQLite every transaction takes the database lock up
    front (BEGIN IMMEDIATE, service.db), so a request must not hold one while it computes: that
    would serialise all predictions, and the workers' writes, behind each other."""
    session.commit()  # nothing to write; expire_on_commit=False keeps the rows loaded


def get_model(session: Session, tenant: str, model_id: str) -> Model:
    """The tenant's model row without its weights blob (see `ModelStore.network`); NotFound otherwise."""
    begin_read(session)
    try:
        return get_owned(session, Model, tenant, model_id, resource="model",
                         options=[defer(Model.weights, raiseload=True)])
    finally:
        end_read(session)


def list_models(
    session: Session, tenant: str, *, limit: int, cursor: str | None,
    dataset_id: str | None = None, job_id: str | None = None,
) -> tuple[list[Model], str | None]:
    """Newest first; the cursor is the last id of the previous page."""
    query = owned(select(Model).options(defer(Model.weights)), Model, tenant)
    if dataset_id is not None:
        query = query.where(Model.dataset_id == dataset_id)
    if job_id is not None:
        query = query.where(Model.job_id == job_id)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(Model.id < after)
    rows = session.scalars(query.order_by(Model.id.desc()).limit(limit + 1)).all()
    return split_page(rows, limit)


def delete_model(session: Session, store: ModelStore, tenant: str, model_id: str) -> None:
    """Delete a model. Models derived from it stay (their parent_model_id becomes null); refused
    (Conflict) while an unfinished job still starts from it."""
    get_model(session, tenant, model_id)
    pending = session.scalars(
        select(Job.id).where(Job.parent_model_id == model_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
        .order_by(Job.id).limit(1)
    ).first()
    if pending is not None:
        session.rollback()
        raise Conflict(f"model {model_id!r} is the parent of unfinished job {pending!r}; cancel it first",
                       job_id=pending)
    deleted = session.execute(owned(delete(Model).where(Model.id == model_id), Model, tenant)).rowcount
    session.commit()
    store.evict(model_id)
    if not deleted:  # deleted by someone else since get_model
        raise NotFound("model", model_id)
    log.info("model %s deleted", model_id)


def _dataset(session: Session, dataset_id: str) -> Dataset:
    begin_read(session)
    row = session.get(Dataset, dataset_id)
    end_read(session)
    if row is None:  # the RESTRICT foreign key keeps a model's dataset; this is a broken database
        raise NotFound("dataset", dataset_id)
    return row


def _weights(session: Session, model_id: str) -> bytes:
    begin_read(session)
    weights = session.scalars(select(Model.weights).where(Model.id == model_id)).one_or_none()
    end_read(session)
    if weights is None:
        raise NotFound("model", model_id)
    return weights


# --------------------------------------------------------------------------------------------------
# formulas


@dataclass(frozen=True)
class CompiledFormulas:
    """A model's formulas (one per output) and their numpy functions."""

    source: str                        # "stored" (written by the worker) | "computed" (derived on request)
    entries: list[dict[str, Any]]      # FormulaOut fields
    functions: list[Callable[..., Any]]

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """(B, n_inputs) -> (B, n_outputs); NaN where a formula is undefined or not real."""
        columns = [x[:, i] for i in range(x.shape[1])]
        out = np.empty((x.shape[0], len(self.functions)), dtype=np.float64)
        with np.errstate(all="ignore"):
            for j, fn in enumerate(self.functions):
                out[:, j] = kan_formula.real_values(fn(*columns), x.shape[0])
        return out


def _compile(expr: sympy.Expr, variables: Sequence[str]) -> Callable[..., Any]:
    return sympy.lambdify([sympy.Symbol(v) for v in variables], expr, modules="numpy")


def _parse(text: str, variables: Sequence[str]) -> sympy.Expr:
    """A stored formula (sympy's printing, written by the worker) read back by the same whitelist
    parser as client formulas, with room for larger expressions: stored text is never evaluated.
    Every variable is a plain symbol, even a name sympy would read as a constant (E, S, beta)."""
    return parse_expression(text, variables, limits=STORED_LIMITS)


def _variables(stored: dict[str, Any] | None, dataset: Dataset, n_inputs: int) -> list[str]:
    """The formula's symbols: as stored by the worker, else the dataset's feature names (validated
    as symbol names on upload), else x_1..x_n."""
    names = [str(v) for v in (stored or {}).get("variables") or dataset.feature_names or []]
    return names if len(names) == n_inputs else [f"x_{i + 1}" for i in range(n_inputs)]


# --------------------------------------------------------------------------------------------------
# the store


@dataclass(frozen=True)
class LoadedNetwork:
    """A deserialised network in eval mode without gradients; safe to call from many threads.

    Small batches (FROZEN_MAX_CELLS) go through `frozen` (kan_core.frozen: the same forward pass in
    numpy, ~10x cheaper than torch's on a few rows, where torch's per-call overhead is all the cost);
    larger ones through the torch network."""

    model: KAN
    frozen: FrozenKAN | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.frozen is not None and len(x) * self.frozen.cells_per_row <= FROZEN_MAX_CELLS:
            return self.frozen(x).astype(np.float64, copy=False)
        # no_grad, not inference_mode: the parameters need no gradient either way, and kan_core's
        # layers keep their knot tables and edge masks between calls only outside inference mode
        with torch.no_grad():
            y = self.model(torch.as_tensor(x, dtype=self.model.dtype, device=self.model.device))
        return y.to(device="cpu", dtype=torch.float64).numpy()


class ModelStore:
    """Cached, thread-safe access to everything a model row serves."""

    def __init__(self, max_models: int = 64, max_derived: int = 64, row_ttl_s: float = 0.0):
        # predict's model rows, per (tenant, id): another tenant's lookup never hits this one's entry
        self._rows: TTLCache[tuple[str, str], Model] = TTLCache(row_ttl_s)
        self._networks: LRUCache[str, LoadedNetwork] = LRUCache(max_models)
        self._formulas: LRUCache[str, CompiledFormulas | None] = LRUCache(max_models)
        # formula text + variables -> compiled function: keyed by content, so an entry is never stale
        self._texts: LRUCache[tuple[str, tuple[str, ...]], CompiledFormulas] = LRUCache(max_derived)
        self._samples: LRUCache[str, np.ndarray] = LRUCache(max_models)
        self._edges: LRUCache[tuple[str, int, bool], list[dict[str, Any]]] = LRUCache(max_derived)
        self._plots: LRUCache[str, bytes] = LRUCache(max_derived)
        self._plot_lock = threading.Lock()  # matplotlib makes no thread-safety promise

    def evict(self, model_id: str) -> None:
        self._rows.discard(lambda key: key[1] == model_id)
        for cache in (self._networks, self._formulas, self._plots):
            cache.discard(lambda key: key == model_id)
        self._edges.discard(lambda key: key[0] == model_id)

    # ---- rows

    def model_row(self, session: Session, tenant: str, model_id: str) -> Model:
        """`get_model`, reused for `row_ttl_s` seconds (the predict hot path). A row never changes
        once written, so a cached one is only ever stale by existing: a model deleted through this
        process is evicted at once, one deleted by another process is served at most `row_ttl_s`
        longer. Unknown ids are not cached."""
        key = (tenant, model_id)
        row = self._rows.get(key)
        if row is None:
            row = get_model(session, tenant, model_id)
            self._rows.put(key, row)
        return row

    # ---- networks

    def network(self, session: Session, row: Model) -> LoadedNetwork:
        return self._networks.get_or_create(row.id, lambda: self._load_network(session, row))

    @staticmethod
    def _load_network(session: Session, row: Model) -> LoadedNetwork:
        model = kan_io.loads(_weights(session, row.id), row.kan_config, device="cpu")
        model.train(False)  # inference mode of nn.Module (same as .eval())
        model.requires_grad_(False)
        log.info("model %s loaded (width %s, %s)", row.id, row.width, model.dtype)
        return LoadedNetwork(model, FrozenKAN.of(model))

    def training_sample(self, session: Session, dataset_id: str) -> np.ndarray:
        """Up to SAMPLE_ROWS training inputs: a fixed random subset (stored rows may be sorted)."""

        def load() -> np.ndarray:
            x = datasets.unpack(_dataset(session, dataset_id).arrays).train_input
            if len(x) > SAMPLE_ROWS:
                x = x[np.sort(np.random.default_rng(0).choice(len(x), SAMPLE_ROWS, replace=False))]
            return np.ascontiguousarray(x, dtype=np.float64)

        return self._samples.get_or_create(dataset_id, load)

    def _sample_tensor(self, session: Session, row: Model, model: KAN) -> torch.Tensor:
        return torch.as_tensor(self.training_sample(session, row.dataset_id), dtype=model.dtype, device=model.device)

    # ---- prediction

    def predict(
        self, session: Session, row: Model, inputs: Sequence[Sequence[float]], mode: PredictMode, *, max_rows: int
    ) -> list[list[float | None]]:
        x = validate_inputs(inputs, int(row.width[0]), max_rows)
        if mode is PredictMode.network:
            return rows_json(self.network(session, row)(x))
        return rows_json(self.require_formulas(session, row).evaluate(x))

    def predict_cached(
        self, tenant: str, model_id: str, inputs: Sequence[Sequence[float]], mode: PredictMode, *, max_rows: int
    ) -> list[list[float | None]] | None:
        """`predict` when it needs neither the database nor a first load: a request of at most
        INLINE_PREDICT_ROWS rows for a model whose row (`model_row`) and network (or formulas) are
        cached. None otherwise: the caller then runs `predict` (in the threadpool). Cheap enough to
        run on the event loop, which saves the thread hand-off of the hot path."""
        if len(inputs) > INLINE_PREDICT_ROWS:
            return None
        row = self._rows.get((tenant, model_id))
        if row is None:
            return None
        if mode is PredictMode.network:
            network = self._networks.peek(row.id)
            if network is None:
                return None
            return rows_json(network(validate_inputs(inputs, int(row.width[0]), max_rows)))
        compiled = self._formulas.peek(row.id, _MISSING)
        if compiled is _MISSING:
            return None
        return rows_json(self._require(row, compiled).evaluate(validate_inputs(inputs, int(row.width[0]), max_rows)))

    # ---- formulas

    def formulas(self, session: Session, row: Model) -> CompiledFormulas | None:
        """The stored formulas, else ones derived from a fully symbolic network; None when neither."""
        return self._formulas.get_or_create(row.id, lambda: self._build_formulas(session, row))

    def require_formulas(self, session: Session, row: Model) -> CompiledFormulas:
        return self._require(row, self.formulas(session, row))

    def text_formula(self, text: str, variables: Sequence[str]) -> CompiledFormulas:
        """A stored formula's text (a discovery's front point, say) parsed with the whitelist parser
        and lambdified once, then reused: `.evaluate(x)` gives (B, 1). The cache key is the text and
        the variables themselves, so nothing ever needs evicting for staleness."""
        key = (text, tuple(variables))
        return self._texts.get_or_create(key, lambda: CompiledFormulas(
            "stored", [], [_compile(_parse(text, variables), variables)]))

    @staticmethod
    def _require(row: Model, compiled: CompiledFormulas | None) -> CompiledFormulas:
        if compiled is None:
            raise Conflict(
                f"model {row.id!r} has no closed-form formula: some of its edges are still splines. "
                "Make them symbolic (POST /v1/models/{id}/symbolic) or predict with mode=network"
            )
        return compiled

    def _build_formulas(self, session: Session, row: Model) -> CompiledFormulas | None:
        dataset = _dataset(session, row.dataset_id)
        if row.formulas:
            return self._stored_formulas(row, dataset)
        model = self.network(session, row).model
        if not model.is_symbolic():
            return None
        variables = _variables(None, dataset, int(row.width[0]))
        exprs = kan_formula.symbolic_formula(model, var_names=variables)
        functions = [_compile(e, variables) for e in exprs]
        arrays = datasets.unpack(dataset.arrays)
        compiled = CompiledFormulas("computed", [], functions)
        y_hat = compiled.evaluate(np.asarray(arrays.test_input, dtype=np.float64))
        for j, expr in enumerate(exprs):
            fit = kan_metrics.fit_metrics(y_hat[:, j], np.asarray(arrays.test_label[:, j], dtype=np.float64))
            r2, rmse = fit["r2"], fit["rmse"]
            compiled.entries.append({
                "output": j, "name": _name(dataset.target_names, j), "variables": variables,
                "text": str(expr), "latex": kan_formula.formula_latex(expr),
                "complexity": int(kan_formula.formula_complexity(expr)), "r2": r2, "rmse": rmse,
            })
        log.info("model %s: formulas derived on request", row.id)
        return compiled

    @staticmethod
    def _stored_formulas(row: Model, dataset: Dataset) -> CompiledFormulas:
        entries, functions = [], []
        for j, stored in enumerate(row.formulas or []):
            variables = _variables(stored, dataset, int(row.width[0]))
            expr = _parse(str(stored["text"]), variables)
            functions.append(_compile(expr, variables))
            entries.append({
                "output": j, "name": stored.get("name") or _name(dataset.target_names, j), "variables": variables,
                "text": str(stored["text"]), "latex": str(stored.get("latex") or kan_formula.formula_latex(expr)),
                "complexity": stored.get("complexity"),
                "r2": json_ready(stored.get("r2")), "rmse": json_ready(stored.get("rmse")),
            })
        return CompiledFormulas("stored", entries, functions)

    # ---- inspection

    def edges(self, session: Session, row: Model, n_points: int, include_inactive: bool) -> list[dict[str, Any]]:
        def build() -> list[dict[str, Any]]:
            model = self.network(session, row).model
            x = self._sample_tensor(session, row, model)
            return json_ready(kan_inspect.edges(model, x, n_points=n_points, include_inactive=include_inactive))

        return self._edges.get_or_create((row.id, n_points, include_inactive), build)

    def plot_png(self, session: Session, row: Model) -> bytes:
        def build() -> bytes:
            model = self.network(session, row).model
            x = self._sample_tensor(session, row, model)
            dataset = _dataset(session, row.dataset_id)
            with self._plot_lock:
                return kan_plot.plot_png(model, x, var_names=list(dataset.feature_names),
                                         out_names=list(dataset.target_names))

        return self._plots.get_or_create(row.id, build)


def artifact(session: Session, row: Model) -> bytes:
    """One safetensors file: the weights, with the JSON config in its metadata under
    `kan_core.io.CONFIG_METADATA_KEY`; `kan_core.io.from_bytes(blob)` loads it back."""
    return kan_io.to_bytes_from(_weights(session, row.id), row.kan_config)


def _name(names: Sequence[Any], j: int) -> str | None:
    return str(names[j]) if j < len(names) else None
