"""Dashboard pages: log in and out, datasets (list, create from a CSV or a formula, one dataset's
statistics and scatter plots) and starting a discovery on one."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse

from service.errors import Unauthorized
from service.ui.core import (
    COOKIE, PREFIX, ApiProblem, CallerDep, SameOrigin, get_principal_for_token, render,
)

router = APIRouter()
SCATTER_ROWS = 500  # rows of the training split drawn on a dataset's page

Text = Annotated[str, Form()]


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}{path}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: a login link must not send the browser anywhere else."""
    return target if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") else f"{PREFIX}/datasets"


@router.get("")
@router.get("/")
async def index() -> RedirectResponse:
    return _redirect("/datasets")


@router.get("/login")
async def login_page(request: Request, next: str | None = None):
    return render(None, "login.html", request=request, next=_safe_next(next), error=None)


@router.post("/login", dependencies=[SameOrigin])
async def login(request: Request, key: Text, next: Annotated[str | None, Form()] = None):
    """Check the key as the API would, then keep it in an HttpOnly, SameSite=Strict cookie."""
    target = _safe_next(next)
    try:
        await get_principal_for_token(request, key.strip())
    except Unauthorized as exc:
        return render(None, "login.html", status_code=401, request=request, next=target, error=exc.detail)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict", path=PREFIX,
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout", dependencies=[SameOrigin])
async def logout() -> RedirectResponse:
    response = _redirect("/login")
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


async def _datasets_page(caller, cursor: str | None = None, status_code: int = 200, **forms: Any):
    page = await caller.get("/datasets", limit=200, cursor=cursor)
    context = {"csv_form": {"values": {}, "errors": {}}, "expr_form": {"values": {"ranges": "x1 -1 1\nx2 -1 1",
               "n_train": 1000, "n_test": 1000, "noise": 0}, "errors": {}}, **forms}
    return render(caller, "datasets.html", status_code=status_code, page=page, **context)


@router.get("/datasets")
async def datasets_page(caller: CallerDep, cursor: str | None = None):
    return await _datasets_page(caller, cursor)


@router.post("/datasets/csv", dependencies=[SameOrigin])
async def create_from_csv(caller: CallerDep, file: Annotated[UploadFile, File()], name: Text = "",
                          targets: Text = "", test_fraction: Text = ""):
    """The upload goes to POST /v1/datasets as multipart: the API's errors are shown next to their field."""
    values = {"name": name, "targets": targets, "test_fraction": test_fraction}
    data = {k: v for k, v in values.items() if v.strip()}
    content = await file.read()
    try:
        created = await caller.json("POST", "/datasets", data=data,
                                    files={"file": (file.filename or "data.csv", content, "text/csv")})
    except ApiProblem as exc:
        errors = {_form_field(k, upload=True): v for k, v in exc.field_errors().items()}
        return await _datasets_page(caller, status_code=exc.status, csv_form={"values": values, "errors": errors})
    return _redirect(f"/datasets/{created['id']}")


@router.post("/datasets/expression", dependencies=[SameOrigin])
async def create_from_expression(caller: CallerDep, expression: Text = "", ranges: Text = "", name: Text = "",
                                 n_train: Text = "1000", n_test: Text = "1000", noise: Text = "0", seed: Text = "0"):
    values = {"expression": expression, "ranges": ranges, "name": name, "n_train": n_train, "n_test": n_test,
              "noise": noise, "seed": seed}
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"expression": expression}
    if name.strip():
        body["name"] = name.strip()
    try:
        body["ranges"] = _parse_ranges(ranges)
    except ValueError as exc:
        errors["ranges"] = str(exc)
    body.update(_numbers(values, (("n_train", int), ("n_test", int), ("noise", float), ("seed", int)), errors))
    if not errors:
        try:
            created = await caller.json("POST", "/datasets", json=body)
            return _redirect(f"/datasets/{created['id']}")
        except ApiProblem as exc:
            errors = {_form_field(k, upload=False): v for k, v in exc.field_errors().items()}
            status = exc.status
    else:
        status = 422
    return await _datasets_page(caller, status_code=status, expr_form={"values": values, "errors": errors})


def _numbers(values: dict[str, str], fields: tuple[tuple[str, type], ...], errors: dict[str, str], *,
             optional: bool = False) -> dict[str, Any]:
    """The form's number fields converted by their type (int or float); one that does not convert is
    named in `errors`. With `optional`, blank fields are left out instead."""
    out: dict[str, Any] = {}
    for key, convert in fields:
        text = values[key].strip()
        if optional and not text:
            continue
        try:
            out[key] = convert(text)
        except ValueError:
            errors[key] = f"must be {'an integer' if convert is int else 'a number'}"
    return out


def _parse_ranges(text: str) -> dict[str, list[float]]:
    """`x1 -1 1` per line (or `;`-separated) -> {"x1": [-1.0, 1.0]}."""
    out: dict[str, list[float]] = {}
    for part in text.replace(";", "\n").splitlines():
        if not part.strip():
            continue
        pieces = part.replace(",", " ").split()
        if len(pieces) != 3:
            raise ValueError(f"write one variable per line as 'name low high', not {part.strip()!r}")
        try:
            out[pieces[0]] = [float(pieces[1]), float(pieces[2])]
        except ValueError:
            raise ValueError(f"the bounds of {pieces[0]!r} are not numbers") from None
    if not out:
        raise ValueError("give at least one variable as 'name low high'")
    return out


def _form_field(api_field: str, upload: bool) -> str:
    """The form field an API error names: `ranges.x1` -> ranges; for an upload, `body` (the file's
    content) -> file. A field no input shows (a rate limit's `body`) is listed under the form."""
    head = api_field.split(".")[0].split("[")[0]
    return "file" if upload and head in ("body", "file", "Content-Type") else head


@router.get("/datasets/{dataset_id}")
async def dataset_page(caller: CallerDep, dataset_id: str):
    return await _dataset_page(caller, dataset_id)


async def _dataset_page(caller, dataset_id: str, status_code: int = 200, discover_form: dict[str, Any] | None = None):
    dataset = await caller.get(f"/datasets/{dataset_id}")
    rows = await caller.get(f"/datasets/{dataset_id}/data", split="train", limit=SCATTER_ROWS)
    scatter = {"features": rows["feature_names"], "target": rows["target_names"][0],
               "inputs": rows["inputs"], "targets": [row[0] for row in rows["targets"]]}
    discoveries = [d for d in (await caller.get("/discoveries", limit=200))["items"] if d["dataset_id"] == dataset_id]
    form = discover_form or {"values": {"max_candidates": 4, "max_seconds": 120, "train_steps": ""}, "errors": {}}
    return render(caller, "dataset.html", status_code=status_code, dataset=dataset, scatter=scatter,
                  discoveries=discoveries, discover_form=form, fmt=_fmt)


@router.post("/datasets/{dataset_id}/discover", dependencies=[SameOrigin])
async def start_discovery(caller: CallerDep, dataset_id: str, max_candidates: Text = "4",
                          max_seconds: Text = "120", train_steps: Text = ""):
    values = {"max_candidates": max_candidates, "max_seconds": max_seconds, "train_steps": train_steps}
    errors: dict[str, str] = {}
    budget = _numbers(values, (("max_candidates", int), ("max_seconds", float)), errors, optional=True)
    options = _numbers(values, (("train_steps", int),), errors, optional=True)
    if not errors:
        try:
            created = await caller.json("POST", "/discoveries",
                                        json={"dataset_id": dataset_id, "budget": budget, "options": options})
            return _redirect(f"/discoveries/{created['id']}")
        except ApiProblem as exc:
            if exc.status == 404:
                raise
            errors = {k.split(".")[-1]: v for k, v in exc.field_errors().items()}
    return await _dataset_page(caller, dataset_id, status_code=422,
                              discover_form={"values": values, "errors": errors})


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"
