"""/v1/datasets: create (JSON arrays, CSV upload or a formula), read, list, delete.

`POST /v1/datasets` picks the source from the Content-Type: `application/json` (arrays, or a formula
when the object has an `expression`), `multipart/form-data` (a CSV `file` plus form fields) or
`text/csv` (the CSV as the body, options as query parameters). Reading the body is HTTP work and
stays here; building and validating the dataset is service.datasets'.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service import datasets
from service.api.deps import SessionDep, SettingsDep, TenantDep, WriteScope
from service.errors import BadRequest, UnsupportedMediaType
from service.idempotency import IdempotencyKeyHeader
from service.models import Dataset
from service.schemas.common import (
    DEFAULT_PAGE_SIZE,
    CursorQuery,
    LimitQuery,
    Page,
    inline_schema,
    problem_responses,
)
from service.schemas.datasets import (
    CsvOptions,
    DatasetCreateArrays,
    DatasetCreateSynthetic,
    DatasetData,
    DatasetPublic,
    DatasetSummary,
)

router = APIRouter(prefix="/datasets", tags=["datasets"])

CSV_TYPES = ("text/csv", "application/csv")
MAX_DATA_ROWS = 10_000

DatasetId = Annotated[str, Path(max_length=40, description="A dataset id (`ds_...`).")]


# --------------------------------------------------------------------------------------------------
# request body -> DatasetRequest


def _validate(model: type[BaseModel], data: Any, where: str) -> Any:
    """`model` validated from `data`; errors answer 422 with the same `field` names pydantic uses."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**err, "loc": (where, *err["loc"])} for err in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors) from None


def _parse_json(body: bytes) -> DatasetCreateArrays | DatasetCreateSynthetic:
    try:
        # Python's json accepts NaN and Infinity (and 1e999 -> inf): they are let through as floats so
        # that validation rejects them naming the field they sit in.
        data = json.loads(body)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply", field="body") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        position = getattr(exc, "pos", getattr(exc, "start", 0))
        message = getattr(exc, "msg", "not UTF-8")
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error",
                                       "ctx": {"error": message}}]) from None
    if not isinstance(data, dict):
        raise RequestValidationError([{"type": "model_type", "loc": ("body",),
                                       "msg": "the body must be a JSON object"}])
    model = DatasetCreateSynthetic if "expression" in data else DatasetCreateArrays
    return _validate(model, data, "body")


async def _parse_form(request: Request) -> datasets.CsvUpload:
    try:
        form = await request.form(max_files=1, max_fields=len(CsvOptions.model_fields))
    except HTTPException as exc:  # Starlette's multipart errors: too many fields or files, no boundary...
        raise BadRequest(f"the multipart body cannot be read: {exc.detail}", field="body") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise RequestValidationError([{"type": "missing", "loc": ("body", "file"),
                                           "msg": "a CSV file is required in the form field 'file'"}])
        data = await upload.read()
        fields = {key: value for key, value in form.multi_items() if key != "file"}
    finally:
        await form.close()
    for key, value in fields.items():
        if not isinstance(value, str):
            raise RequestValidationError([{"type": "string_type", "loc": ("body", key), "msg": "must be a text field"}])
    return datasets.CsvUpload(data, _validate(CsvOptions, fields, "body"), field="file")


async def dataset_request(request: Request) -> datasets.DatasetRequest:
    """The creation request, read according to its Content-Type."""
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    # the query parameters configure text/csv bodies; they are checked whatever the body, so that a
    # typo is never silently ignored
    query_options = _validate(CsvOptions, dict(request.query_params), "query")
    if media_type == "multipart/form-data":
        return await _parse_form(request)
    if media_type in CSV_TYPES:
        return datasets.CsvUpload(await request.body(), query_options, field="body")
    if media_type == "application/json" or media_type.endswith("+json"):
        body = await request.body()
        return await run_in_threadpool(_parse_json, body)  # large bodies: keep the event loop free
    raise UnsupportedMediaType(
        f"send application/json, text/csv or multipart/form-data, not {media_type!r}", field="Content-Type"
    )


DatasetRequestDep = Annotated[datasets.DatasetRequest, Depends(dataset_request)]

_CSV_OPTIONS = inline_schema(CsvOptions.model_json_schema())["properties"]
CREATE_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"oneOf": [
            inline_schema(DatasetCreateArrays.model_json_schema()),
            inline_schema(DatasetCreateSynthetic.model_json_schema()),
        ]}},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "additionalProperties": False,
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": "CSV with a header row naming every column."}, **_CSV_OPTIONS},
        }},
        "text/csv": {"schema": {"type": "string",
                                "description": "CSV with a header row; options as query parameters."}},
    },
}
CSV_QUERY_PARAMETERS = [
    {"name": name, "in": "query", "required": False, "schema": schema,
     "description": f"Used with a text/csv body. {schema.get('description', '')}".strip()}
    for name, schema in _CSV_OPTIONS.items()
]


# --------------------------------------------------------------------------------------------------
# routes


def _public(row: Dataset) -> DatasetPublic:
    summary = DatasetSummary.model_validate(row)
    return DatasetPublic(**summary.model_dump(), columns=datasets.column_summaries(row))


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    summary="Create a dataset from JSON arrays, a CSV file or a formula",
    responses=problem_responses(400, 409, 413, 415, 422),
    dependencies=[WriteScope],
    openapi_extra={"requestBody": CREATE_REQUEST_BODY, "parameters": CSV_QUERY_PARAMETERS},
)
def create_dataset(
    payload: DatasetRequestDep,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> DatasetPublic:
    row = datasets.create_dataset(session, settings, tenant, payload, idempotency_key)
    response.headers["Location"] = str(request.url_for("get_dataset", dataset_id=row.id))
    return _public(row)


@router.get("", response_model=Page[DatasetSummary], summary="List datasets, newest first",
            responses=problem_responses(422))
def list_datasets(
    session: SessionDep, tenant: TenantDep, limit: LimitQuery = DEFAULT_PAGE_SIZE, cursor: CursorQuery = None
) -> Page[DatasetSummary]:
    rows, next_cursor = datasets.list_datasets(session, tenant, limit, cursor)
    return Page[DatasetSummary](items=[DatasetSummary.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetPublic, summary="A dataset's metadata and column statistics",
            responses=problem_responses(404, 422))
def get_dataset(dataset_id: DatasetId, session: SessionDep, tenant: TenantDep) -> DatasetPublic:
    return _public(datasets.get_dataset(session, tenant, dataset_id))


@router.get("/{dataset_id}/data", response_model=DatasetData, summary="Rows of one split",
            responses=problem_responses(404, 422))
def get_dataset_data(
    dataset_id: DatasetId,
    session: SessionDep,
    tenant: TenantDep,
    split: Annotated[Literal["train", "test"], Query()] = "train",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_DATA_ROWS)] = 1_000,
) -> DatasetData:
    row = datasets.get_dataset(session, tenant, dataset_id)
    return DatasetData.model_validate(datasets.read_rows(row, split, offset, limit))


@router.delete("/{dataset_id}", status_code=204, summary="Delete a dataset no job or model uses",
               responses=problem_responses(404, 409, 422), dependencies=[WriteScope])
def delete_dataset(dataset_id: DatasetId, session: SessionDep, tenant: TenantDep) -> Response:
    datasets.delete_dataset(session, tenant, dataset_id)
    return Response(status_code=204)
