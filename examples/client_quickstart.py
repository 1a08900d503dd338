"""The seed formula, exp(sin(pi*x1) + x2**2), found through the Python client by a running service.

    kan-service serve                        # in another shell (or any service: --url / $KAN_URL)
    python examples/client_quickstart.py [--url http://127.0.0.1:8000] [--budget 60]

Needs only the client (`pip install ./client`, plus `[all]` for the table and the sympy form); no
torch. It samples the formula on the service, searches the data for a formula with a progress bar,
prints the Pareto front and the chosen formula, and predicts with it on new rows.
"""

from __future__ import annotations

import argparse
import os

from kan_client import Client

SEED = "exp(sin(pi*x1) + x2**2)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("KAN_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("KAN_API_KEY"))
    parser.add_argument("--budget", type=float, default=60, help="seconds the search may take")
    parser.add_argument("--max-candidates", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=None, help="fewer: faster, rougher")
    args = parser.parse_args()

    with Client(args.url, args.api_key) as client:
        dataset = client.create_dataset(expression=SEED, ranges={"x1": [-1, 1], "x2": [-1, 1]},
                                        n_train=1000, n_test=1000, name="seed formula")
        print(f"dataset {dataset.id}: {dataset.n_train} training rows of {', '.join(dataset.feature_names)}")
        search = client.discover(dataset, budget=args.budget, max_candidates=args.max_candidates,
                                 train_steps=args.train_steps)
        result = search.wait(progress=True)
        print(f"discovery {result.id} {result.status}: {result.reason}")
        for point in result.front:  # simplest first
            print(f"  complexity {point.complexity:3d}  test RMSE {point.test_rmse:.3g}  {point.text}")
        print(f"chosen formula: {result.formula}")
        try:
            print(f"as sympy: {result.sympy()!r}")
        except ImportError:
            pass  # sympy is an optional extra
        rows = [[0.5, 0.5], [-0.25, 0.75]]
        outputs = result.predict(rows)  # a numpy array where numpy is installed, else lists
        values = outputs.tolist() if hasattr(outputs, "tolist") else outputs
        print(f"predictions at {rows}: {[round(row[0], 6) for row in values]}")


if __name__ == "__main__":
    main()
