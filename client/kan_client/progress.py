"""Progress from server-sent events: a tqdm bar (tqdm.auto: a widget in Jupyter, text in a terminal)
or, without tqdm, one line per change on stderr. `Follower` turns a job's or a discovery's events
into bar updates and user callbacks and says when the stream's `end` came."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

EventCallback = Callable[[str, dict[str, Any]], Any]


class _TextBar:
    """The part of tqdm's interface used here, as lines on stderr."""

    def __init__(self, total: float, desc: str):
        self.total, self.n, self.desc, self._last = total, 0.0, desc, ""

    def set_postfix_str(self, text: str) -> None:
        self._postfix = text

    def refresh(self) -> None:
        line = f"{self.desc}: {self.n:g}/{self.total:g} {getattr(self, '_postfix', '')}".rstrip()
        if line != self._last:
            print(line, file=sys.stderr, flush=True)
            self._last = line

    def close(self) -> None:
        pass


def make_bar(total: float, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextBar(total, desc)
    return tqdm(total=total, desc=desc, bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} [{elapsed}] {postfix}")


def _short(text: str, n: int = 50) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class Follower:
    """Consumes (event, data) pairs; `done` after `end`, whose data is then in `end`."""

    def __init__(self, kind: str, id: str, *, progress: bool = False, callback: EventCallback | None = None):
        self.kind, self.id, self.callback = kind, id, callback
        self.bar: Any = make_bar(1, f"{kind} {id}") if progress else None
        self.end: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.end is not None

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback(event, data)
        if event == "end":
            self.end = data
        if self.bar is not None:
            self._draw(event, data)

    def _draw(self, event: str, data: dict[str, Any]) -> None:
        bar = self.bar
        if self.kind == "job" and event == "progress" and data.get("progress"):
            p = data["progress"]
            bar.total = p.get("stages") or 1
            steps = p.get("steps") or 0
            bar.n = p.get("stage_index", 0) + (p.get("step", 0) / steps if steps else 0)
            rmse = p.get("train_rmse")
            bar.set_postfix_str(f"{p.get('stage') or ''} rmse={rmse:.3g}" if rmse is not None else p.get("stage") or "")
        elif self.kind == "discovery" and event == "progress" and data.get("progress"):
            p = data["progress"]
            bar.total = max(p.get("candidates_total") or 1, 1)
            bar.n = p.get("candidates_done", 0)
            best = p.get("best")
            if best:
                bar.set_postfix_str(f"best rmse={best['test_rmse']:.3g} {_short(best['formula'])}")
        elif event == "end":
            bar.n = bar.total
            bar.set_postfix_str(data.get("status", ""))
        bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
