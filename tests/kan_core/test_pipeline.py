"""PipelineConfig validation and dict round trip; run_pipeline end to end on a tiny problem."""

from __future__ import annotations

import json

import pytest

from kan_core.pipeline import (
    EdgeFix,
    ModelConfig,
    PipelineConfig,
    PruneStage,
    RefineStage,
    SymbolicStage,
    TrainStage,
)


def test_default_config_is_the_seed_recipe():
    config = PipelineConfig()
    assert [s.name for s in config.stages] == ["train", "prune", "retrain", "auto_symbolic", "symbolic_fit"]
    assert config.stages[0].lamb == 0.01 and config.stages[0].lamb_entropy == 10.0
    assert config.model.grid == 5 and config.model.k == 3 and config.model.dtype == "float64"


def test_config_round_trips_through_json():
    config = PipelineConfig(
        model=ModelConfig(width=(2, 3, 1), grid=7, dtype="float32", device="auto", grid_range=(-2.0, 2.0)),
        stages=(
            TrainStage(opt="Adam", steps=3, lr=0.01, batch=64),
            PruneStage(edge_th=0.05),
            SymbolicStage(fixes=(EdgeFix(0, 1, 2, "sin", fit=False),), auto=False, lib=("x", "sin")),
            RefineStage(grid=12),
        ),
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert data["stages"][2]["fixes"][0] == {"layer": 0, "in": 1, "out": 2, "function": "sin", "fit": False}
    assert PipelineConfig.from_dict(data) == config


def test_from_dict_fills_defaults_and_accepts_ints_for_floats():
    assert PipelineConfig.from_dict({}) == PipelineConfig()
    config = PipelineConfig.from_dict({"stages": [{"kind": "train", "lr": 1}]})
    assert config.stages == (TrainStage(lr=1.0),)
    assert isinstance(config.stages[0].lr, float)


@pytest.mark.parametrize(
    "data, where",
    [
        ({"model": {"grid": 0}}, "config.model"),
        ({"model": {"width": [2]}}, "width"),
        ({"model": {"dtype": "float16"}}, "config.model.dtype"),
        ({"model": {"device": "tpu"}}, "device"),
        ({"model": {"grid_range": [1, -1]}}, "grid_range"),
        ({"model": {"colour": "red"}}, "colour"),
        ({"stages": {"kind": "train"}}, "config.stages"),
        ({"stages": [{"kind": "fly"}]}, "config.stages[0].kind"),
        ({"stages": [{"steps": 3}]}, "config.stages[0].kind"),
        ({"stages": [{"kind": "train", "steps": 1.5}]}, "config.stages[0].steps"),
        ({"stages": [{"kind": "train", "steps": True}]}, "config.stages[0].steps"),
        ({"stages": [{"kind": "train", "lamb": -1}]}, "lamb"),
        ({"stages": [{"kind": "train", "lr": float("nan")}]}, "config.stages[0].lr"),
        ({"stages": [{"kind": "train", "opt": "SGD"}]}, "config.stages[0].opt"),
        ({"stages": [{"kind": "train"}, {"kind": "prune", "bogus": 1}]}, "config.stages[1]: unknown field(s) bogus"),
        ({"stages": [{"kind": "symbolic", "fixes": [{"layer": 0, "in": 0}]}]}, "missing field(s) out, function"),
        ({"stages": [{"kind": "symbolic", "lib": []}]}, "lib"),
        ({"stages": [{"kind": "refine", "grid": "10"}]}, "config.stages[0].grid"),
        ([], "config"),
    ],
)
def test_from_dict_rejects_bad_fields_naming_them(data, where):
    with pytest.raises(ValueError) as info:
        PipelineConfig.from_dict(data)
    assert where in str(info.value)


def test_constructors_validate_too():
    with pytest.raises(ValueError, match="steps"):
        TrainStage(steps=-1)
    with pytest.raises(ValueError, match="edge_th"):
        PruneStage(edge_th=-0.1)
    with pytest.raises(ValueError, match="stages"):
        PipelineConfig(stages=("train",))
