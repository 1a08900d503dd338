"""kan_client: `units=` when creating a dataset (JSON and CSV uploads) against the real service."""

from __future__ import annotations

import numpy as np
import pytest

from kan_client import ValidationError

UNITS = {"L": "m", "g": "m/s^2", "T": "s"}


def test_units_go_with_arrays_and_csv(client, tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.0, (12, 2))
    y = 2 * np.pi * np.sqrt(x[:, 0] / x[:, 1])
    made = client.create_dataset(x, y=y, feature_names=["L", "g"], target="T", units=UNITS)
    assert made.units == UNITS and client.dataset(made.id).units == UNITS
    path = tmp_path / "pendulum.csv"
    path.write_text("L,g,T\n" + "".join(f"{a},{b},{t}\n" for (a, b), t in zip(x, y)))
    from_csv = client.create_dataset(str(path), target="T", units=UNITS)
    assert from_csv.units == UNITS
    with pytest.raises(ValidationError) as bad:
        client.create_dataset(x, y=y, feature_names=["L", "g"], target="T", units={**UNITS, "g": "m/s^^2"})
    assert "units.g" in str(bad.value) or getattr(bad.value, "field", None) == "units.g"
