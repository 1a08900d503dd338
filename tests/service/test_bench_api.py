"""bench/bench_api.py: the benchmark's data reaches the service unchanged, and one formula runs end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench_api():
    spec = importlib.util.spec_from_file_location("bench_api", ROOT / "bench" / "bench_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_upload_keeps_both_splits_bit_for_bit_and_renames_a_clashing_target(client) -> None:
    bench = _bench_api()
    entry = {"id": "t", "formula": "x*y + z", "variables": {"x": [1, 2], "y": [-1, 1], "z": [0, 3]}}
    names, _, data = bench.make_data(entry, seed=3, n=50)
    dataset_id, api_names = bench.upload(client, entry, names, data)
    assert api_names == ["x", "y", "z"]
    meta = client.get(f"/v1/datasets/{dataset_id}").json()
    assert meta["target_names"] == ["y_out"] and (meta["n_train"], meta["n_test"]) == (50, 50)
    for split, x, y in (("train", data.train_input, data.train_label), ("test", data.test_input, data.test_label)):
        rows = client.get(f"/v1/datasets/{dataset_id}/data", params={"split": split, "limit": 1000}).json()
        assert np.array_equal(np.array(rows["inputs"]), x.numpy())  # float64 through JSON, exactly
        assert np.array_equal(np.array(rows["targets"]), y.numpy())


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a hang guard, not a speed test: at load ~17 on 2 cores, starting the server took 5-8 min
def test_one_formula_through_a_started_server(tmp_path: Path) -> None:
    formulas = tmp_path / "f.json"
    formulas.write_text(json.dumps({"formulas": [{"id": "prod", "formula": "x1*x2",
                                                   "variables": {"x1": [1, 2], "x2": [1, 2]}}]}))
    out = tmp_path / "rows.jsonl"
    # the discovery of a product ends in seconds; its budget only bounds a stuck run
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_api.py"), "--formulas", str(formulas),
                    "--budget", "60", "--jsonl", str(out)], check=True, cwd=ROOT)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["id"] == "prod" and row["status"] == "succeeded"
    assert row["solved"] and row["r2"] > 0.999999
    assert row["candidates"] and row["chosen_candidate"]["id"]
