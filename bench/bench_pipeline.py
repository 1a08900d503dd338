"""Seed pipeline, kan_core vs pykan 0.2.8, on the same data in the same process.

Recipe (pykan's README example): KAN [2, 5, 1], grid 5, k 3 on f = exp(sin(pi*x1) + x2^2),
1000 train / 1000 test points uniform on [-1, 1]^2; LBFGS 20 steps (lamb 0.01, lamb_entropy 10),
prune, LBFGS 50 steps, auto_symbolic on (x, x^2, x^3, x^4, exp, log, sqrt, sin, abs), LBFGS 50
steps, formula. Both in float64 (pykan via torch.set_default_dtype). A formula counts when
kan_core.judge.is_solution accepts it (shared/benchmarks/README.md).

Per seed, the two libraries run alternately, so machine load hits both alike; wall and CPU times
are printed per stage. pykan writes checkpoints into the working directory, so it runs in a
temporary directory, and a crash of pykan on one seed is caught and reported.

    .venv/bin/python bench/bench_pipeline.py [--seeds 0 1 2 3 4] [--threads 1] [--skip-pykan]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import sympy
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kan_core.data import make_dataset  # noqa: E402
from kan_core.judge import is_solution  # noqa: E402
from kan_core.pipeline import ModelConfig, PipelineConfig, run_pipeline  # noqa: E402

STAGES = ["train", "prune", "retrain", "auto_symbolic", "symbolic_fit", "formula"]
LIB = ["x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "sin", "abs"]
X1, X2 = sympy.symbols("x_1 x_2")
TRUE = sympy.exp(sympy.sin(sympy.pi * X1) + X2**2)


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(torch.pi * x[:, [0]]) + x[:, [1]] ** 2)


class Clock:
    """Wall seconds per named stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.wall[name] = now - self._t
        self._t = now


def run_pykan(dataset, seed: int) -> tuple[Clock, sympy.Expr | None, str]:
    from kan import KAN  # bench only: the reference library

    clock = Clock()
    data = {
        "train_input": dataset.train_input, "train_label": dataset.train_label,
        "test_input": dataset.test_input, "test_label": dataset.test_label,
    }
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.makedirs("model", exist_ok=True)  # pykan logs history there even with auto_save=False
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                clock = Clock()
                model = KAN(width=[2, 5, 1], grid=5, k=3, seed=seed, auto_save=False)
                model.fit(data, opt="LBFGS", steps=20, lamb=0.01, lamb_entropy=10.0)
                clock.lap("train")
                model = model.prune()
                clock.lap("prune")
                model.fit(data, opt="LBFGS", steps=50)
                clock.lap("retrain")
                model.auto_symbolic(lib=LIB)
                clock.lap("auto_symbolic")
                model.fit(data, opt="LBFGS", steps=50)
                clock.lap("symbolic_fit")
                formula = model.symbolic_formula()[0][0]
                clock.lap("formula")
            return clock, formula, ""
        except Exception as exc:  # pykan 0.2.8 crashes on some seeds (e.g. in curve2coef)
            return clock, None, f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
        finally:
            os.chdir(cwd)


def run_kan_core(dataset, seed: int, dtype: str) -> tuple[Clock, sympy.Expr | None, str]:
    clock = Clock()
    result = run_pipeline(dataset, PipelineConfig(model=ModelConfig(seed=seed, dtype=dtype)))
    for stage in result.stages:
        clock.wall[stage.name] = stage.seconds
    clock.wall["formula"] = result.seconds - sum(clock.wall.values())  # formula, metrics, bookkeeping
    formula = result.formulas[0] if result.formulas else None
    return clock, formula, ""


def judge(formula: sympy.Expr | None) -> bool:
    if formula is None:
        return False
    try:
        return bool(is_solution(formula, TRUE, [X1, X2]))
    except Exception:
        traceback.print_exc()
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--skip-pykan", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(getattr(torch, args.dtype))  # pykan builds its tensors in the default dtype
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.dtype}, seeds {args.seeds}")

    # warm-up: first calls pay for lazy imports and allocator set-up
    warm = make_dataset(target, 2, n_train=100, n_test=100, seed=99, dtype=getattr(torch, args.dtype))
    run_kan_core(warm, 0, args.dtype)

    wall: dict[str, dict[int, dict[str, float]]] = {"pykan": {}, "kan_core": {}}  # name -> seed -> stage
    cpu: dict[str, dict[int, float]] = {"pykan": {}, "kan_core": {}}
    solved = {"pykan": 0, "kan_core": 0}
    for seed in args.seeds:
        dataset = make_dataset(target, 2, seed=seed, dtype=getattr(torch, args.dtype))
        runs = [("kan_core", lambda: run_kan_core(dataset, seed, args.dtype))]
        if not args.skip_pykan:
            runs.insert(0, ("pykan", lambda: run_pykan(dataset, seed)))
        for name, run in runs:
            start_cpu = time.process_time()
            clock, formula, error = run()
            seconds_cpu = time.process_time() - start_cpu
            ok = judge(formula)
            solved[name] += ok
            if not error:
                wall[name][seed], cpu[name][seed] = clock.wall, seconds_cpu
            stages = " ".join(f"{s}={clock.wall.get(s, float('nan')):.2f}" for s in STAGES)
            print(f"seed {seed} {name:8s} total={sum(clock.wall.values()):6.2f}s cpu={seconds_cpu:6.2f}s  {stages}"
                  f"  solution={ok}  {(error or str(formula))[:150]}", flush=True)

    print()
    print(f"solutions: kan_core {solved['kan_core']}/{len(args.seeds)}"
          + ("" if args.skip_pykan else f", pykan {solved['pykan']}/{len(args.seeds)}"))
    common = sorted(set(wall["pykan"]) & set(wall["kan_core"]))
    if not common:
        return
    print(f"mean seconds per seed over the {len(common)} seeds pykan completed ({common}):")
    print(f"{'stage':14s} {'pykan':>9s} {'kan_core':>9s} {'speed-up':>9s}")
    rows = [(s, *(sum(wall[n][seed][s] for seed in common) / len(common) for n in ("pykan", "kan_core")))
            for s in STAGES]
    rows.append(("total (wall)", *(sum(r[i] for r in rows) for i in (1, 2))))
    rows.append(("total (CPU)", *(sum(cpu[n][seed] for seed in common) / len(common) for n in ("pykan", "kan_core"))))
    for s, p, k in rows:
        print(f"{s:14s} {p:9.3f} {k:9.3f} {p / k if k > 0 else float('inf'):8.1f}x")


if __name__ == "__main__":
    main()
