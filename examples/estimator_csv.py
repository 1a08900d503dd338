"""Formula discovery from a CSV file with the in-process estimator, kan_core.KANRegressor.

    python examples/estimator_csv.py                                # the shipped data/coulomb.csv
    python examples/estimator_csv.py my.csv --target y [--budget 60] [--max-candidates 12]

Needs the project installed (torch; pandas for the CSV, scikit-learn optional), no service. The
CSV's columns become the formula's variable names. It prints the Pareto front of the formulas
found (simplest first), the chosen one as text and LaTeX, and its predictions on a few rows.
data/coulomb.csv holds 80 rows of force = 8.99 * q1 * q2 / r**2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from kan_core import KANRegressor

DEFAULT_CSV = Path(__file__).resolve().parent / "data" / "coulomb.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", default=str(DEFAULT_CSV), help="a CSV file with a header row")
    parser.add_argument("--target", default=None, help="the column to explain (default: the last one)")
    parser.add_argument("--budget", type=float, default=60, help="seconds discovery may take")
    parser.add_argument("--max-candidates", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = pd.read_csv(args.csv)
    target = args.target or data.columns[-1]
    if target not in data.columns:
        parser.error(f"--target {target!r} is not a column of {args.csv}: {list(data.columns)}")
    X, y = data.drop(columns=[target]), data[target]
    print(f"{len(data)} rows: {target} from {', '.join(X.columns)}")

    model = KANRegressor(budget=args.budget, max_candidates=args.max_candidates, seed=args.seed)
    model.fit(X, y)
    print(f"discovery ran {len(model.result_.results)} candidate(s) in {model.result_.seconds:.1f} s "
          f"(stopped: {model.result_.stopped})")
    print("Pareto front (simplest first):")
    for _, row in model.equations_.iterrows():
        mark = "*" if row["chosen"] else " "
        print(f" {mark} complexity {row['complexity']:3d}  test RMSE {row['test_rmse']:.3g}  {row['equation']}")
    print(f"chosen formula: {target} = {model.sympy()}")
    print(f"LaTeX: {model.latex()}")
    head = X.head(3)
    for (_, row), pred, true in zip(head.iterrows(), model.predict(head), y.head(3)):
        inputs = ", ".join(f"{name}={value:.4g}" for name, value in row.items())
        print(f"  {inputs} -> {pred:.6g} (data: {true:.6g})")


if __name__ == "__main__":
    main()
