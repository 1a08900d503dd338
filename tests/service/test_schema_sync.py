"""The /v1/jobs pipeline schemas list the engine's config fields (kan_core.pipeline) with the same defaults.

The pydantic models add what the engine has no word for (bounds, descriptions, examples), so they
are written out rather than generated; these tests fail when the engine gains, loses or renames a
field, or changes a default, and the schema does not follow. Fields the API deliberately leaves out
are named here, so leaving one out is a decision, not an accident.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel

from kan_core import pipeline as kp
from service.schemas import jobs as schemas

# a job trains a plain KAN: the other network families are discovery candidates (CandidateConfig)
MODEL_FIELDS_NOT_IN_API = {"family", "product_rank", "als_restarts"}
# polish and balance run inside discovery candidates only
STAGE_KINDS_NOT_IN_API = {"polish", "balance"}

PAIRS = [
    (schemas.ModelSpec, kp.ModelConfig, MODEL_FIELDS_NOT_IN_API),
    (schemas.TrainStageSpec, kp.TrainStage, set()),
    (schemas.PruneStageSpec, kp.PruneStage, set()),
    (schemas.SymbolicStageSpec, kp.SymbolicStage, set()),
    (schemas.RefineStageSpec, kp.RefineStage, set()),
    (schemas.EdgeFixSpec, kp.EdgeFix, set()),
]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def _engine_defaults(config: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _plain(f.default_factory())
        else:
            out[f.name] = dataclasses.MISSING
    return out


def _schema_defaults(schema: type[BaseModel]) -> dict[str, Any]:
    return {
        name: dataclasses.MISSING if field.is_required() else _plain(field.get_default(call_default_factory=True))
        for name, field in schema.model_fields.items()
    }


@pytest.mark.parametrize(("schema", "config", "left_out"), PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_schema_lists_the_engine_fields(schema, config, left_out):
    engine = {f.name for f in dataclasses.fields(config)}
    assert left_out <= engine, f"{sorted(left_out - engine)} are no longer engine fields of {config.__name__}"
    assert set(schema.model_fields) == engine - left_out


@pytest.mark.parametrize(("schema", "config", "left_out"), PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_schema_defaults_are_the_engine_defaults(schema, config, left_out):
    engine, api = _engine_defaults(config), _schema_defaults(schema)
    differ = {name: (api[name], engine[name]) for name in api
              if name != "kind" and name in engine and api[name] != engine[name]}
    assert differ == {}, "schema default != engine default"


def test_stage_kinds_are_the_engine_kinds_but_polish_and_balance():
    spec_kinds = {s.model_fields["kind"].annotation.__args__[0]
                  for s in (schemas.TrainStageSpec, schemas.PruneStageSpec, schemas.SymbolicStageSpec,
                            schemas.RefineStageSpec)}
    assert STAGE_KINDS_NOT_IN_API <= set(kp.STAGE_KINDS)
    assert spec_kinds == set(kp.STAGE_KINDS) - STAGE_KINDS_NOT_IN_API


def test_a_job_config_rebuilds_the_engine_default_model():
    stored = schemas.PipelineSpec().pipeline_dict()
    assert kp.PipelineConfig.from_dict(stored) == kp.PipelineConfig()
