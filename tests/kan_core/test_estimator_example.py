"""examples/estimator_csv.py runs as documented: the shipped CSV gives Coulomb's law, and a CSV of
one's own with ``--target`` naming a column that is not the last one gives its formula."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kan_core.judge import is_solution

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "estimator_csv.py"


def _run(*args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLE), *args, "--budget", "600"], cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _chosen(stdout: str, target: str) -> str:
    prefix = f"chosen formula: {target} = "
    return next(line for line in stdout.splitlines() if line.startswith(prefix)).removeprefix(prefix)


def test_the_shipped_csv_gives_coulombs_law(tmp_path):
    out = _run(cwd=tmp_path)
    assert out.startswith("80 rows: force from q1, q2, r")
    assert is_solution(_chosen(out, "force"), "8.99*q1*q2/r**2", ["q1", "q2", "r"]), out
    assert "Pareto front" in out and "LaTeX: " in out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_csv_of_ones_own_with_a_target_column(tmp_path):
    x = np.random.default_rng(5).uniform(-2, 2, (50, 2))
    table = pd.DataFrame({"height": x[:, 0] ** 2 + np.cos(x[:, 1]), "u": x[:, 0], "w": x[:, 1]})
    table.to_csv(tmp_path / "mine.csv", index=False, float_format="%.17g")
    out = _run(str(tmp_path / "mine.csv"), "--target", "height", cwd=tmp_path)
    assert out.startswith("50 rows: height from u, w")
    assert is_solution(_chosen(out, "height"), "u**2 + cos(w)", ["u", "w"]), out
