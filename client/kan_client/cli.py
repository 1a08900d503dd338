"""`kan-client` (also `kan-service discover | jobs | discoveries | functions` when the server is
installed): discovery and job following from a shell.

    kan-client discover data.csv --target y [--url URL] [--budget 60] [--max-candidates N] [--json]
    kan-client discoveries watch ID [--json]
    kan-client jobs watch ID [--json]
    kan-client functions [--json]

A live progress bar goes to stderr (tqdm when installed); the result goes to stdout: a table of the
Pareto front and the chosen formula, or with --json the service's JSON for scripts. The exit status
is 0 when the discovery or job succeeded, 1 when it failed or was cancelled, 2 when the request was
refused or the service could not be reached.
`--url` defaults to $KAN_URL (else http://127.0.0.1:8000), `--api-key` to $KAN_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from kan_client._core import DEFAULT_URL
from kan_client.client import Client
from kan_client.errors import JobFailed, KanError
from kan_client.results import DiscoveryResult


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def front_table(result: DiscoveryResult) -> str:
    """The Pareto front, simplest first; `*` marks the chosen formula."""
    rows = [["", "complexity", "test_rmse", "r2", "formula"]]
    chosen = result.chosen.job_id if result.chosen else None
    for point in result.front:
        rows.append(["*" if point.job_id == chosen else "", str(point.complexity), _num(point.test_rmse),
                     _num(point.r2), point.text])
    return _table(rows)


def _print_discovery(result: DiscoveryResult, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result.data, indent=2))
    else:
        print(f"discovery {result.id} {result.status}" + (f": {result.reason}" if result.reason else ""))
        if result.front:
            print(front_table(result))
        print(f"chosen: {result.formula}" if result.chosen else "no formula")
    return 0 if result.status == "succeeded" else 1


def cmd_discover(client: Client, args: argparse.Namespace) -> int:
    handle = client.discover(args.data, target=args.target, budget=args.budget, max_candidates=args.max_candidates,
                             train_steps=args.train_steps, seed=args.seed)
    if not args.json:
        print(f"discovery {handle.id} on dataset {handle.result.dataset_id}", file=sys.stderr)
    return _follow_discovery(handle, args)


def _follow_discovery(handle: Any, args: argparse.Namespace) -> int:
    try:
        result = handle.wait(progress=not args.json and not args.quiet)
    except JobFailed as exc:
        result = handle.refresh()
        if not args.json:
            print(str(exc), file=sys.stderr)
    return _print_discovery(result, args.json)


def cmd_discoveries_watch(client: Client, args: argparse.Namespace) -> int:
    return _follow_discovery(client.discovery(args.id), args)


def cmd_jobs_watch(client: Client, args: argparse.Namespace) -> int:
    handle = client.job(args.id)
    try:
        model = handle.wait(progress=not args.json and not args.quiet)
    except JobFailed as exc:
        model = None
        if not args.json:
            print(str(exc), file=sys.stderr)
    job = handle.job
    if args.json:
        print(json.dumps({"job": job.data, "model": model.data if model else None}, indent=2))
    else:
        print(f"job {job.id} {job.status}" + (f": model {job.model_id}" if job.model_id else ""))
        for formula in model.formulas if model else []:
            print(f"{formula.name or 'y'} = {formula.text}")
    return 0 if job.status == "succeeded" else 1


def cmd_functions(client: Client, args: argparse.Namespace) -> int:
    functions = client.functions()
    if args.json:
        print(json.dumps(functions, indent=2))
    else:
        print(_table([["name", "complexity", "sympy"]] + [[f["name"], str(f["complexity"]), f["sympy"]]
                                                           for f in functions]))
    return 0


def _common(parser: argparse.ArgumentParser, default_url: str | None) -> None:
    parser.add_argument("--url", default=os.environ.get("KAN_URL") or default_url or DEFAULT_URL,
                        help="the service's base URL (default: $KAN_URL or %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("KAN_API_KEY"), help="API key (default: $KAN_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (no progress bar)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_commands(commands: Any, default_url: str | None = None) -> None:
    """Add discover / discoveries / jobs / functions to an argparse subparsers object (this CLI's, or
    `kan-service`'s); each sets `client_handler`."""
    discover = commands.add_parser("discover", help="search a CSV file for a formula, with a progress bar")
    discover.add_argument("data", help="CSV file with a header row")
    discover.add_argument("--target", help="target column(s), comma-separated (default: the last column)")
    discover.add_argument("--budget", type=float, help="seconds the search may take (default: the service's)")
    discover.add_argument("--max-candidates", type=int, help="most candidate pipelines to try")
    discover.add_argument("--train-steps", type=int, help="steps of every training stage (fewer: faster, rougher)")
    discover.add_argument("--seed", type=int, help="seed of the candidates' networks")
    _common(discover, default_url)
    discover.set_defaults(client_handler=cmd_discover)

    for noun, what, shows, handler in (("discoveries", "a discovery", "its front", cmd_discoveries_watch),
                                       ("jobs", "a training job", "its model's formulas", cmd_jobs_watch)):
        watch = commands.add_parser(noun, help=f"follow {what}") \
            .add_subparsers(dest=f"{noun}_command", required=True, metavar="ACTION") \
            .add_parser("watch", help=f"follow {what} to its end, then print {shows}")
        watch.add_argument("id", metavar="ID")
        _common(watch, default_url)
        watch.set_defaults(client_handler=handler)

    functions = commands.add_parser("functions", help="the symbolic function library")
    _common(functions, default_url)
    functions.set_defaults(client_handler=cmd_functions)


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command; a refused request or an unreachable service prints why and returns 2."""
    if getattr(args, "target", None) and "," in args.target:
        args.target = [t.strip() for t in args.target.split(",")]
    try:
        with Client(args.url, args.api_key) as client:
            return args.client_handler(client, args)
    except KanError as exc:
        print(f"error: {exc}" + (f" (field: {exc.field})" if exc.field else ""), file=sys.stderr)
        return 2
    except (httpx.TransportError, ConnectionError) as exc:  # after the client's retries
        print(f"error: cannot reach the service at {args.url}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kan-client", description="Client of the KAN formula-discovery service.")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
