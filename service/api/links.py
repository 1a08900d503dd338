"""OpenAPI links: how the id a creating route answers feeds the routes that take it.

A client (or a stateful tester such as schemathesis) reads them to chain calls: a created dataset's
`id` into `POST /v1/jobs` and `/v1/discoveries`, a job's into its status, history and cancel routes,
the first listed item's id into the routes of that item (a list is how a client finds ids it did not
create). They are added to the generated document in one place
(`add_links`), by method and path, so routers stay free of them.
"""

from __future__ import annotations

from typing import Any

BODY_ID = "$response.body#/id"
FIRST_ITEM_ID = "$response.body#/items/0/id"

# (method, path, status) of the answer -> link name -> (method, path of the target, parameters, body)
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str], dict[str, str] | None]]] = {
    ("post", "/v1/datasets", "201"): {
        "GetDataset": ("get", "/v1/datasets/{dataset_id}", {"dataset_id": BODY_ID}, None),
        "GetDatasetData": ("get", "/v1/datasets/{dataset_id}/data", {"dataset_id": BODY_ID}, None),
        "CreateJob": ("post", "/v1/jobs", {}, {"dataset_id": BODY_ID}),
        "CreateDiscovery": ("post", "/v1/discoveries", {}, {"dataset_id": BODY_ID}),
        "DeleteDataset": ("delete", "/v1/datasets/{dataset_id}", {"dataset_id": BODY_ID}, None),
    },
    ("post", "/v1/jobs", "202"): {
        "GetJob": ("get", "/v1/jobs/{job_id}", {"job_id": BODY_ID}, None),
        "GetJobHistory": ("get", "/v1/jobs/{job_id}/history", {"job_id": BODY_ID}, None),
        "CancelJob": ("post", "/v1/jobs/{job_id}/cancel", {"job_id": BODY_ID}, None),
    },
    ("post", "/v1/discoveries", "202"): {
        "GetDiscovery": ("get", "/v1/discoveries/{discovery_id}", {"discovery_id": BODY_ID}, None),
        "PredictDiscovery": ("post", "/v1/discoveries/{discovery_id}/predict", {"discovery_id": BODY_ID}, None),
        "CancelDiscovery": ("post", "/v1/discoveries/{discovery_id}/cancel", {"discovery_id": BODY_ID}, None),
    },
    ("post", "/v1/batches", "202"): {
        "GetBatch": ("get", "/v1/batches/{batch_id}", {"batch_id": BODY_ID}, None),
    },
    ("get", "/v1/datasets", "200"): {
        "GetFirstDataset": ("get", "/v1/datasets/{dataset_id}", {"dataset_id": FIRST_ITEM_ID}, None),
        "TrainOnFirstDataset": ("post", "/v1/jobs", {}, {"dataset_id": FIRST_ITEM_ID}),
        "DiscoverOnFirstDataset": ("post", "/v1/discoveries", {}, {"dataset_id": FIRST_ITEM_ID}),
    },
    ("get", "/v1/jobs", "200"): {
        "GetFirstJob": ("get", "/v1/jobs/{job_id}", {"job_id": FIRST_ITEM_ID}, None),
        "GetFirstJobHistory": ("get", "/v1/jobs/{job_id}/history", {"job_id": FIRST_ITEM_ID}, None),
        "CancelFirstJob": ("post", "/v1/jobs/{job_id}/cancel", {"job_id": FIRST_ITEM_ID}, None),
    },
    ("get", "/v1/discoveries", "200"): {
        "GetFirstDiscovery": ("get", "/v1/discoveries/{discovery_id}", {"discovery_id": FIRST_ITEM_ID}, None),
        "PredictWithFirstDiscovery": ("post", "/v1/discoveries/{discovery_id}/predict",
                                      {"discovery_id": FIRST_ITEM_ID}, None),
        "CancelFirstDiscovery": ("post", "/v1/discoveries/{discovery_id}/cancel",
                                 {"discovery_id": FIRST_ITEM_ID}, None),
    },
    ("get", "/v1/models", "200"): {
        "GetFirstModel": ("get", "/v1/models/{model_id}", {"model_id": FIRST_ITEM_ID}, None),
        "PredictWithFirstModel": ("post", "/v1/models/{model_id}/predict", {"model_id": FIRST_ITEM_ID}, None),
        "DeriveFromFirstModel": ("post", "/v1/models/{model_id}/symbolic", {"model_id": FIRST_ITEM_ID}, None),
        "GetFirstModelFormula": ("get", "/v1/models/{model_id}/formula", {"model_id": FIRST_ITEM_ID}, None),
    },
    ("post", "/v1/models/{model_id}/symbolic", "202"): {
        "GetDerivingJob": ("get", "/v1/jobs/{job_id}", {"job_id": BODY_ID}, None),
    },
}


def add_links(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (an OpenAPI dict) with LINKS added where both ends exist; returns it."""
    paths = document.get("paths", {})
    for (method, path, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        out = response.setdefault("links", {})
        for name, (target_method, target_path, parameters, body) in links.items():
            target = paths.get(target_path, {}).get(target_method)
            if target is None:
                continue
            link: dict[str, Any] = {"operationId": target["operationId"]}
            if parameters:
                link["parameters"] = parameters
            if body:
                link["requestBody"] = body
            out[name] = link
    return document
