"""The candidate configurations discovery tries, most promising first.

Candidate order uses only properties of the data (number of inputs, signs of inputs and target),
never the true formula.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kan_core.data import Dataset
from kan_core.discovery.records import Budget, CandidateSpec, Family, _require
from kan_core.pipeline import (
    BalanceStage,
    ModelConfig,
    PipelineConfig,
    PolishStage,
    PruneStage,
    SymbolicStage,
    TrainStage,
)
from kan_core.transform import TransformConfig

# Functions auto_symbolic may choose in discovery: the seed library plus the reciprocals, cosine and
# the hyperbolic pair (velocity addition is tanh(arctanh(a) + arctanh(b))).
DISCOVERY_LIBRARY: tuple[str, ...] = (
    "x", "x^2", "x^3", "x^4", "1/x", "1/x^2", "sqrt", "1/sqrt", "exp", "log", "sin", "cos", "tanh", "arctanh", "abs",
)  # fmt: skip


def _stages(lamb: float, lamb_entropy: float, steps: int, lib: Sequence[str], *, refit: int = 50,
            prune: bool = True, update_grid: bool = True) -> tuple:
    first = TrainStage(name="train", steps=steps, lamb=lamb, lamb_entropy=lamb_entropy, update_grid=update_grid)
    out = [first]
    if prune:
        out += [PruneStage(name="prune"), TrainStage(name="retrain", steps=50, update_grid=update_grid)]
    out += [SymbolicStage(name="auto_symbolic", lib=tuple(lib)), PolishStage(name="polish", steps=refit)]
    return tuple(out)


def _product_stages(lib: Sequence[str]) -> tuple:
    return (
        TrainStage(name="train", steps=30, update_grid=False),
        PruneStage(name="prune"),
        TrainStage(name="retrain", steps=20, update_grid=False),
        SymbolicStage(name="auto_symbolic", lib=tuple(lib)),
        BalanceStage(name="balance"),
        PolishStage(name="polish", steps=50),
    )


MAX_SWEEP = 200  # at most this many candidates in all, however large the budget


def candidates(
    dataset: Dataset,
    budget: Budget | None = None,
    *,
    seed: int = 0,
    library: Sequence[str] = DISCOVERY_LIBRARY,
) -> list[CandidateSpec]:
    """The candidate configurations for ``dataset``, most promising first, at most
    ``budget.max_candidates`` of them. Deterministic: the same dataset and arguments give the same
    list. ``seed`` offsets every model seed (another list of equally ranked candidates).

    Order (each only where it applies to the data):
    0. sparse: ``t(y) = c_0 + sum_k c_k g_k(x)`` over a dictionary of terms (`kan_core.sparse`:
       deterministic, seconds, no network): polynomials, monomials, sums of library terms, rationals;
       then (>= 2 inputs) the structure search (`kan_core.recurse`: a surrogate's separability and
       symmetry tests split the problem into smaller ones, solved by these candidates and composed
       back; it gives up after the tests when the data shows none): it solves most of what the sparse
       fit misses, before the fixed shapes below take their time (bench/RESULTS.md, session 6);
    1. log-additive: ``log y = sum_i f_i(x_i)`` (all targets > 0): products, ratios and powers of
       positive factors, a single-layer KAN in log space;
    2. separable product ``c prod_i f_i(x_i) + d`` (signed products and ratios), >= 2 inputs;
    3. product plus additive ``sum_i g_i(x_i) + c prod_i f_i(x_i)``, >= 2 inputs; then the same for
       ``log y`` (all targets > 0): ``n_0 exp(-m g x / (k_b T))``;
    4. additive ``y = sum_i f_i(x_i)``, a single-layer KAN; then (>= 3 inputs) a sum of two
       separable products (``n*T*(log(V2) - log(V1))``);
    5. ``[n, 5, 1]`` with a mild regulariser (lamb 0.002) on the raw data: compositions such as
       ``exp(sin(pi x1) + x2^2)`` or ``sqrt(x1^2 + x2^2)`` after pruning;
    6. the seed recipe on ``[n, 5, 1]`` (pykan's: lamb 0.01, entropy 10, prune, retrain);
    7. log-target ``[n, 5, 1]`` (all targets > 0);
    8. ``[n, 5, 1]`` mild on standardised inputs and target; ``[n, 4, 2, 1]``; then further seeds;
    9. only when ``budget.max_candidates`` asks for more (up to MAX_SWEEP): a sweep over widths
       ``[n,3,1]``, ``[n,8,1]``, ``[n,4,2,1]``, grids 3, 5, 8, the mild and seed-recipe regularisers,
       raw and standardised data, each with a new seed.
    Every symbolic stage is followed by a Levenberg-Marquardt polish of the constants; the final
    formula's constants are refitted once more on the formula itself and keep as many digits as the
    fit needs (`kan_core.constants.sharpen_constants`).
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    budget = Budget() if budget is None else budget
    if not isinstance(budget, Budget):
        raise ValueError(f"budget must be a Budget, got {type(budget).__name__}")
    if dataset.n_out != 1:
        raise ValueError(f"discovery needs a single target, the dataset has {dataset.n_out}")
    lib = tuple(library)
    _require(len(lib) > 0, "library must name at least one function")
    n = dataset.n_var
    y_pos = bool((dataset.train_label > 0).all()) and bool((dataset.test_label > 0).all())
    raw = TransformConfig()
    std_all = TransformConfig(standardize_inputs=True, standardize_target=True)
    log_y = TransformConfig(standardize_inputs=True, log_target=True)
    specs: list[tuple[str, PipelineConfig, str]] = []

    def add(name: str, family: Family, model: ModelConfig, stages: tuple, transform: TransformConfig,
            label: str, rank: int = 1) -> None:
        model = replace(model, family=family, product_rank=rank, als_restarts=6 if rank == 1 else 8)
        specs.append((name, PipelineConfig(model=model, stages=stages, transform=transform), label))

    wide = (n, 5, 1)
    mild = _stages(0.002, 2.0, 50, lib)
    recipe = _stages(0.01, 10.0, 20, lib)
    add("sparse", "sparse", ModelConfig(seed=seed), (), raw,
        "sparse regression over a dictionary of terms, on y and transformed targets (no network)")
    if n >= 2:  # 10-60 s, or seconds when the data shows no structure: what the sparse fit misses, it mostly solves
        add("structure", "structure", ModelConfig(seed=seed), (), raw,
            "split by the structure of a surrogate (separability, symmetries, target transforms), recurse")
    if y_pos:
        add("log-additive", "kan", ModelConfig(width=(n, 1), seed=seed), _stages(0.0, 0.0, 50, lib, prune=False),
            log_y, "log y = sum f_i(x_i), standardised inputs")
    if n >= 2:
        add("product", "product", ModelConfig(seed=seed), _product_stages(lib), std_all,
            "c * prod f_i(x_i) + d (multiplication node, ALS init), standardised")
        add("product-additive", "product_additive", ModelConfig(seed=seed), _product_stages(lib), std_all,
            "sum g_i(x_i) + c * prod f_i(x_i) (ALS init), standardised")
    if n >= 2 and y_pos:
        add("log-product-additive", "product_additive", ModelConfig(seed=seed), _product_stages(lib), log_y,
            "log y = sum g_i(x_i) + c * prod f_i(x_i) (ALS init): Boltzmann factors, Gaussians")
    add("additive", "kan", ModelConfig(width=(n, 1), seed=seed), _stages(0.0, 0.0, 50, lib, prune=False),
        std_all, "y = sum f_i(x_i), standardised")
    if n >= 3:
        add("product-rank2", "product", ModelConfig(seed=seed), _product_stages(lib), std_all,
            "two separable products, summed (ALS init), standardised", rank=2)
    add("mild", "kan", ModelConfig(width=wide, seed=seed), mild, raw, "[n,5,1], lamb 0.002, raw data")
    add("seed-recipe", "kan", ModelConfig(width=wide, seed=seed), recipe, raw, "pykan's seed recipe on [n,5,1]")
    if y_pos:
        add("log-kan", "kan", ModelConfig(width=wide, seed=seed), mild, log_y,
            "log y = KAN [n,5,1], lamb 0.002, standardised inputs")
    add("mild-std", "kan", ModelConfig(width=wide, seed=seed), mild, std_all, "[n,5,1], lamb 0.002, standardised")
    add("deep", "kan", ModelConfig(width=(n, 4, 2, 1), seed=seed), mild, raw, "[n,4,2,1], lamb 0.002, raw data")
    for extra in (1, 2, 3):
        add(f"mild-s{extra}", "kan", ModelConfig(width=wide, seed=seed + extra), mild, raw,
            f"[n,5,1], lamb 0.002, raw data, seed +{extra}")
        add(f"seed-recipe-s{extra}", "kan", ModelConfig(width=wide, seed=seed + extra), recipe, raw,
            f"seed recipe, seed +{extra}")
    # a budget above the fixed list buys a sweep: widths, grids, regularisers and seeds in turn
    sweep = [(w, g, name, stages) for name, stages in (("mild", mild), ("recipe", recipe))
             for w in ((n, 3, 1), (n, 8, 1), (n, 4, 2, 1)) for g in (3, 5, 8)]
    extra = 4
    while len(specs) < min(budget.max_candidates, MAX_SWEEP):
        for width, grid, name, stages in sweep:
            if len(specs) >= min(budget.max_candidates, MAX_SWEEP):
                break
            label = f"{list(width)}, grid {grid}, {name}, seed +{extra}"
            add(f"sweep-{'-'.join(map(str, width[1:-1]))}-g{grid}-{name}-s{extra}", "kan",
                ModelConfig(width=width, grid=grid, seed=seed + extra), stages, raw if extra % 2 else std_all,
                label + (", raw data" if extra % 2 else ", standardised"))
            extra += 1
    out = [CandidateSpec(id=f"{i:02d}-{name}", pipeline=pipe, priority=i, label=label)
           for i, (name, pipe, label) in enumerate(specs)]
    return out[: budget.max_candidates]
