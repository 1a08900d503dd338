"""PipelineConfig validation and dict round trip; run_pipeline end to end on a tiny problem."""

from __future__ import annotations

import inspect
import json

import pytest
import sympy
import torch

from kan_core.data import make_dataset
from kan_core.errors import TrainingCancelled
from kan_core.model import KAN
from kan_core.pipeline import (
    BalanceStage,
    EdgeFix,
    ModelConfig,
    PipelineConfig,
    ProgressEvent,
    PruneStage,
    RefineStage,
    SymbolicStage,
    TrainStage,
    continue_pipeline,
    run_pipeline,
)
from kan_core.product import ProductLayer
from kan_core.train import fit
from kan_core.transform import TransformConfig


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


def test_train_stage_options_are_fit_keywords():
    # a field added to TrainStage must be a keyword of train.fit (run_pipeline passes them all)
    options = TrainStage(steps=3, lamb=0.5, update_grid=False).fit_options()
    assert options["steps"] == 3 and options["lamb"] == 0.5 and options["update_grid"] is False
    assert "kind" not in options and "name" not in options
    inspect.signature(fit).bind(KAN([1, 1]), None, **options)


# ---- run_pipeline


def _data(n: int = 200):
    return make_dataset(lambda x: x[:, 0] + x[:, 1] ** 2, 2, n_train=n, n_test=n, seed=0)


SMALL = PipelineConfig(
    model=ModelConfig(width=(2, 2, 1), grid=3),
    stages=(
        TrainStage(name="train", steps=3, lamb=0.01),
        PruneStage(),
        SymbolicStage(name="sym", fixes=(EdgeFix(0, 0, 0, "x"),), lib=("x", "x^2")),
        TrainStage(name="fit", steps=2),
    ),
)


def test_run_pipeline_reports_progress_stages_history_and_formulas():
    events: list[ProgressEvent] = []
    result = run_pipeline(_data(), SMALL, on_progress=events.append, var_names=["a", "b"])

    assert [(e.stage_name, e.phase, e.step) for e in events] == [
        ("train", "start", 0), ("train", "step", 1), ("train", "step", 2), ("train", "step", 3), ("train", "end", 3),
        ("prune", "start", 0), ("prune", "end", 0),
        ("sym", "start", 0), ("sym", "end", 0),
        ("fit", "start", 0), ("fit", "step", 1), ("fit", "step", 2), ("fit", "end", 2),
    ]
    assert all(e.n_stages == 4 for e in events)
    step = events[2]
    assert (step.stage_index, step.stage_kind, step.steps) == (0, "train", 3)
    assert step.train_rmse > 0 and step.test_rmse > 0 and step.reg >= 0
    assert events[0].train_rmse is None

    assert [(s.name, s.kind) for s in result.stages] == [
        ("train", "train"), ("prune", "prune"), ("sym", "symbolic"), ("fit", "train")
    ]
    assert all(s.seconds >= 0 and s.width_after == result.model.width for s in result.stages[1:])
    sym = result.stages[2].details
    assert sym["fixes"][0]["function"] == "x" and sym["fixes"][0]["layer"] == 0
    assert all(c["function"] in ("x", "x^2") for c in sym["choices"])
    assert len(result.history) == 5 and result.history[-1]["stage"] == "fit"

    assert result.var_names == ["a", "b"]
    assert result.formulas is not None and len(result.formulas) == 1
    assert result.formulas[0].free_symbols <= {sympy.Symbol("a"), sympy.Symbol("b")}
    assert set(result.formula_metrics[0]) == {"r2", "rmse"}
    json.dumps({"stages": [s.details for s in result.stages], "history": result.history}, allow_nan=False)


def test_no_formula_while_splines_remain_and_refine_changes_the_grid():
    config = PipelineConfig(model=ModelConfig(grid=3), stages=(TrainStage(steps=1), RefineStage(grid=6)))
    result = run_pipeline(_data(), config)
    assert result.formulas is None and result.formula_metrics is None
    assert result.model.grid == 6 and result.model.width == [2, 5, 1]
    assert result.stages[-1].details == {"grid_before": 3}
    assert result.var_names == ["x_1", "x_2"]


def test_float32_and_auto_device():
    config = PipelineConfig(model=ModelConfig(dtype="float32", device="auto"), stages=(TrainStage(steps=1),))
    result = run_pipeline(_data(), config)
    assert result.model.dtype == torch.float32
    assert result.model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_initial_model_is_copied_not_changed():
    start = KAN([2, 3, 1], seed=4).requires_grad_(False)  # as a serving cache holds it
    before = {k: v.clone() for k, v in start.state_dict().items()}
    config = PipelineConfig(model=ModelConfig(width=(2, 9, 1), dtype="float32"), stages=(TrainStage(steps=2),))
    result = run_pipeline(_data(), config, initial_model=start)
    assert result.model is not start and result.model.width == [2, 3, 1] and result.model.dtype == torch.float64
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())
    assert not torch.equal(result.model.layers[0].coef, start.layers[0].coef)  # trained


def test_continue_pipeline_goes_on_from_a_copy_of_the_head():
    data = _data()
    head = run_pipeline(data, PipelineConfig(model=SMALL.model, stages=SMALL.stages[:2]), var_names=["a", "b"])
    before = {k: v.clone() for k, v in head.model.state_dict().items()}
    events: list[ProgressEvent] = []
    run = continue_pipeline(data, head, SMALL.stages[2:], on_progress=events.append)
    assert [s.name for s in run.stages] == ["train", "prune", "sym", "fit"] and len(head.stages) == 2
    assert len(run.history) == 5 and len(head.history) == 3
    assert {e.stage_index for e in events} == {2, 3} and all(e.n_stages == 4 for e in events)
    assert run.formulas is not None and run.var_names == ["a", "b"] and run.model is not head.model
    assert all(torch.equal(before[k], v) for k, v in head.model.state_dict().items())


def test_product_family_is_built_by_the_pipeline_in_transformed_space():
    data = make_dataset(lambda x: x[:, 0] * x[:, 1], 2, n_train=200, n_test=200, seed=1)
    config = PipelineConfig(
        model=ModelConfig(family="product", als_restarts=2),
        stages=(SymbolicStage(lib=("x",)), BalanceStage(), TrainStage(steps=2, update_grid=False)),
        transform=TransformConfig(standardize_inputs=True, standardize_target=True),
    )
    result = run_pipeline(data, config)
    assert isinstance(result.model.layers[0], ProductLayer) and result.transform is not None
    assert result.formulas is not None and result.formula_metrics[0]["r2"] > 1 - 1e-9
    assert [s.kind for s in result.stages] == ["symbolic", "balance", "train"]
    assert PipelineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_model_family_fields_are_validated():
    with pytest.raises(ValueError, match="family"):
        ModelConfig(family="mlp")
    with pytest.raises(ValueError, match="product_rank"):
        ModelConfig(family="product", product_rank=0)
    with pytest.raises(ValueError, match="config.model.family"):
        PipelineConfig.from_dict({"model": {"family": "tree"}})
    one_input = make_dataset(lambda x: x[:, 0], 1, n_train=20, n_test=20)
    with pytest.raises(ValueError, match="n_in"):
        run_pipeline(one_input, PipelineConfig(model=ModelConfig(family="product"), stages=()))


def test_should_stop_cancels_between_steps():
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 4

    with pytest.raises(TrainingCancelled):
        run_pipeline(_data(), SMALL, should_stop=should_stop)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"config": PipelineConfig(model=ModelConfig(width=(3, 2, 1)))}, "width"),
        ({"var_names": ["a"]}, "var_names"),
        ({"var_names": ["a", "a"]}, "var_names"),
        ({"config": PipelineConfig(stages=(SymbolicStage(lib=("x", "sinc")),))}, "sinc"),
        ({"config": PipelineConfig(stages=(SymbolicStage(fixes=(EdgeFix(5, 0, 0, "x"),)),))}, "layer 5"),
        ({"config": {"stages": []}}, "PipelineConfig"),
        ({"initial_model": torch.nn.Linear(2, 1)}, "initial_model"),
    ],
)
def test_run_pipeline_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_pipeline(_data(), **kwargs)
    with pytest.raises(ValueError, match="Dataset"):
        run_pipeline({"train_input": []})
