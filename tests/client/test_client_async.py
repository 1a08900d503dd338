"""kan_client.AsyncClient against the real service: the same API awaited, progress events reaching a
callback, event streams as async iterators, results whose service calls are awaitables."""

from __future__ import annotations

import asyncio
import csv
import io

import numpy as np
import pandas as pd
import pytest

from client_support import SEED_EXPRESSION, SEED_RANGES, SMALL_DISCOVERY, tiny_pipeline
from kan_client import PNG, AsyncClient, ConflictError, DiscoveryHandle, JobHandle, NotFoundError

X = np.array([[0.1, -0.4], [0.5, 0.2]])


def run(coroutine):
    return asyncio.run(coroutine)


def test_async_train_and_model_methods(server) -> None:
    async def scenario():
        async with AsyncClient(server.url, timeout=60) as client:
            assert (await client.health())["status"] == "ok"
            assert "sin" in {f["name"] for f in await client.functions()}
            frame = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1]})
            frame = pd.concat([frame] * 20, ignore_index=True).assign(y=lambda f: f.x1 + f.x2 ** 2)
            dataset = await client.create_dataset(frame, target="y")
            handle = await client.train(dataset, **tiny_pipeline())
            assert isinstance(handle, JobHandle)
            events: list[str] = []
            model = await handle.wait(progress=True, callback=lambda name, data: events.append(name), timeout=600)
            network = await model.predict(X)
            named = await model.predict(pd.DataFrame({"x2": X[:, 1], "x1": X[:, 0]}))
            formula = await model.formula()
            code = await model.formula(format="numpy")
            png = await model.plot()
            blob = await model.download()
            splines = await model.splines(n_points=5)
            history = await client.job_history(model.job_id)
            job = await client.job(model.job_id)
            with pytest.raises(ConflictError):
                await job.cancel()
            with pytest.raises(NotFoundError):
                await client.model("mdl_missing")
            return events, model, network, named, formula, code, png, blob, splines, history

    events, model, network, named, formula, code, png, blob, splines, history = run(scenario())
    assert events[-1] == "end" and "progress" in events
    assert network.shape == (2, 1) and np.allclose(named, network)
    assert formula[0].text == model.formulas[0].text and "def y(x1, x2):" in code
    assert isinstance(png, PNG) and png.startswith(b"\x89PNG") and len(blob) > 0
    assert len(splines["edges"][0]["curve"]["x"]) == 5 and history


def test_async_discovery_events_and_result(server) -> None:
    async def scenario():
        async with AsyncClient(server.url, timeout=60) as client:
            handle = await client.discover(expression=SEED_EXPRESSION, ranges=SEED_RANGES, n_train=200, n_test=100,
                                           **SMALL_DISCOVERY)
            assert isinstance(handle, DiscoveryHandle)
            streamed = [name async for name, _ in handle.events()]  # an async iterator up to `end`
            seen: list[tuple[str, dict]] = []
            result = await handle.wait(callback=lambda name, data: seen.append((name, data)), timeout=600)
            outputs = await result.predict(X)
            front = await handle.front_csv()
            refreshed = await handle.refresh()
            listed = await client.discoveries()
            return streamed, seen, result, outputs, front, refreshed, listed

    streamed, seen, result, outputs, front, refreshed, listed = run(scenario())
    assert streamed[0] == "progress" and streamed[-1] == "end" and "candidate_finished" in streamed
    assert seen[-1][0] == "end" and seen[-1][1]["status"] == result.status == refreshed.status == "succeeded"
    assert result.chosen.test_rmse < 0.05, result.formula
    np.testing.assert_allclose(outputs[:, 0], np.exp(np.sin(np.pi * X[:, 0]) + X[:, 1] ** 2), rtol=0.05)
    rows = list(csv.DictReader(io.StringIO(front)))
    assert [r["formula"] for r in rows] == [p.text for p in result.front]
    assert result.id in {d["id"] for d in listed}
