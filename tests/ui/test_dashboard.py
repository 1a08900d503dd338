"""The dashboard in a real headless Chromium against a live service (authentication on, one worker).

Every wait is on a DOM condition with a generous timeout; no test depends on the machine's speed.
Each test ends by checking that every request the browser made so far went to the service itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from browser_support import HAVE_BROWSER, Browser, LiveService, publish_screenshot

pytestmark = pytest.mark.skipif(not HAVE_BROWSER,
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


def _csv(path, rows: int = 300) -> str:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (rows, 2))
    y = 2 * x[:, 0] + x[:, 1] ** 2
    path.write_text("x1,x2,y\n" + "".join(f"{a:.6f},{b:.6f},{c:.6f}\n" for (a, b), c in zip(x, y)))
    return str(path)


def _assert_only_service_requests(browser: Browser, live: LiveService) -> None:
    urls = browser.requested()
    assert any(url.startswith(live.url + "/ui/static/") for url in urls), urls  # the log does record requests
    outside = [url for url in urls if not url.startswith(live.url + "/") and not url.startswith(("data:", "blob:"))]
    assert not outside, outside


def _points(browser: Browser, css: str) -> int:
    return int(browser.one(css).get_attribute("data-points") or 0)


def test_upload_discover_and_watch(live: LiveService, browser: Browser, tmp_path) -> None:
    """Log in, a bad CSV's error next to its field, a good upload, its page, then a discovery watched
    live until its chosen formula appears typeset with its copy buttons."""
    browser.login(live.keys["write"])
    assert browser.find("#create-forms")
    browser.screenshot("datasets")

    bad = tmp_path / "bad.csv"
    bad.write_text("x1,y\n1,2\nnot-a-number,3\n")
    browser.one("#csv-file").send_keys(str(bad))
    browser.one("#csv-submit").click()
    error = browser.one('#csv-form .error[data-field="file"]')
    assert "not-a-number" in error.text
    browser.screenshot("datasets-csv-error")

    browser.one("#csv-file").send_keys(_csv(tmp_path / "data.csv"))
    browser.one("#csv-submit").click()
    dataset_id = browser.one("#dataset-id").text
    assert dataset_id.startswith("ds_")
    browser.wait(lambda d: len(browser.find("#scatters canvas")) >= 2, "a scatter per input")
    assert [c.text for c in browser.find("#columns tbody td:first-child")] == ["x1", "x2", "y"]
    browser.screenshot("dataset")

    budget = browser.one('#discover-form input[name="max_candidates"]')
    budget.clear()
    budget.send_keys("3")
    steps = browser.one('#discover-form input[name="train_steps"]')
    steps.send_keys("30")
    browser.one("#discover-submit").click()
    browser.wait(lambda d: "/ui/discoveries/dsc_" in d.current_url, "the discovery page")
    # How far the search is when the page first draws depends on the machine's speed (the sparse
    # candidate can finish within a second), so the test checks where the progress ends, not that it
    # was caught moving: the live stream's growth is the job page test's (a job cancelled mid-run).
    browser.one("#progress")
    browser.wait(lambda d: bool(browser.find("#chosen .katex")), "the chosen formula, typeset")
    bar = browser.one("#progress")
    done, total = int(bar.get_attribute("value")), int(bar.get_attribute("max"))
    assert 1 <= done <= total, (done, total)
    assert browser.find('#candidates tbody tr[data-status="succeeded"]')
    assert browser.find("#copy-text")[0].get_attribute("value")
    assert "def y(" in browser.find("#copy-python")[0].get_attribute("value")
    assert browser.find("#front tbody tr")
    assert int(browser.one("#front-plot").get_attribute("data-points")) >= 1
    browser.find('button[data-copy="copy-latex"]')[0].click()
    browser.wait(lambda d: browser.find('button[data-copy="copy-latex"][data-copied="1"]'), "the copy button")
    browser.driver.set_window_size(1400, 1500)  # the formula, its exports and the front in one picture
    browser.screenshot("discovery")
    browser.driver.set_window_size(1400, 1000)
    publish_screenshot("discovery")
    _assert_only_service_requests(browser, live)


def test_job_loss_curve_grows_and_model_page(live: LiveService, browser: Browser) -> None:
    """A long job's loss curve grows on its page, Cancel stops it; a finished model's page draws its
    network and edges; the jobs list filters by status."""
    http = live.http("write")
    dataset = http.post("/v1/datasets", json={"expression": "x1*x2 + sin(x1)", "ranges": {"x1": [-1, 1], "x2": [-1, 1]},
                                              "n_train": 200, "n_test": 100}).json()
    small = http.post("/v1/jobs", json={"dataset_id": dataset["id"], "model": {"width": [2, 2, 1], "grid": 3},
                                        "stages": [{"kind": "train", "opt": "Adam", "lr": 0.01, "steps": 5}]})
    assert small.status_code == 202, small.text
    long = http.post("/v1/jobs", json={"dataset_id": dataset["id"], "model": {"width": [2, 3, 1], "grid": 5},
                                       "stages": [{"kind": "train", "opt": "Adam", "lr": 0.003, "steps": 20_000,
                                                   "update_grid": False}]})
    assert long.status_code == 202, long.text
    job_id = long.json()["id"]

    browser.login(live.keys["write"], f"/ui/jobs/{job_id}")
    browser.wait(lambda d: _points(browser, "#loss-plot") >= 2, "the loss curve to start")
    start = _points(browser, "#loss-plot")
    browser.wait(lambda d: _points(browser, "#loss-plot") > start, "the loss curve to grow")
    assert browser.find("#loss-plot canvas")
    browser.screenshot("job")
    browser.one("#cancel-form button").click()
    browser.wait(lambda d: browser.find("#status .status-cancelled"), "the job cancelled")

    browser.get("/ui/jobs?status=cancelled")
    assert job_id in browser.one("#jobs tbody").text
    browser.get("/ui/jobs?status=succeeded")
    assert job_id not in browser.one("#jobs tbody").text
    browser.screenshot("jobs")

    model_id = browser.wait(lambda d: http.get(f"/v1/jobs/{small.json()['id']}").json().get("model_id"), "a model")
    browser.get(f"/ui/models/{model_id}")
    browser.wait_js("const i = document.getElementById('network'); return i.complete && i.naturalWidth > 0")
    browser.wait(lambda d: len(browser.find("#edges canvas")) >= 6, "a plot per edge")  # [2, 2, 1]: 6 edges
    assert browser.one("#artifact").get_attribute("href").endswith(f"/ui/models/{model_id}/artifact")
    browser.find("#predict-form button")[0].click()
    assert len(browser.one("#predictions tbody").find_elements("css selector", "tr")) == 1
    browser.screenshot("model")
    browser.get("/ui/models")
    assert model_id in browser.one("#models").text
    browser.screenshot("models")
    browser.get("/ui/discoveries")
    assert browser.find("#discoveries tbody a")  # the first test's discovery
    browser.screenshot("discoveries")
    _assert_only_service_requests(browser, live)


def test_read_key_and_other_tenant(live: LiveService, browser: Browser) -> None:
    """A read-scope key sees no create or cancel buttons; another tenant's ids are the not-found page."""
    http = live.http("write")
    dataset = http.post("/v1/datasets", json={"expression": "x1 + 1", "ranges": {"x1": [0, 1]},
                                              "n_train": 50, "n_test": 20}).json()
    job = http.post("/v1/jobs", json={"dataset_id": dataset["id"], "model": {"width": [1, 1], "grid": 3},
                                      "stages": [{"kind": "train", "opt": "Adam", "steps": 20_000}]}).json()
    found = http.post("/v1/discoveries", json={"dataset_id": dataset["id"], "budget": {"max_candidates": 1}}).json()

    browser.login(live.keys["read"])
    assert "scope read" in browser.one("#whoami").text
    assert not browser.find("#create-forms") and not browser.find("form[method=post][action$='/csv']")
    browser.get(f"/ui/datasets/{dataset['id']}")
    browser.one("#columns")
    assert not browser.find("#discover-form")
    browser.get(f"/ui/jobs/{job['id']}")
    browser.one("#loss-plot")
    assert not browser.find("#cancel-form")
    browser.screenshot("read-scope-job")

    browser.login(live.keys["other"])
    assert "tenant globex" in browser.one("#whoami").text
    for path in (f"/ui/datasets/{dataset['id']}", f"/ui/jobs/{job['id']}", f"/ui/discoveries/{found['id']}"):
        browser.get(path)
        browser.one("#not-found")
    browser.get("/ui/datasets")
    assert dataset["id"] not in browser.one("#datasets").text
    browser.screenshot("other-tenant-not-found")
    http.post(f"/v1/jobs/{job['id']}/cancel")
    http.post(f"/v1/discoveries/{found['id']}/cancel")
    _assert_only_service_requests(browser, live)
