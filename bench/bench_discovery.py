"""Formula discovery on the public benchmark: kan_core.discovery vs pykan 0.2.8's seed pipeline.

For each formula of shared/benchmarks/formulas.json: 1000 train and 1000 test points drawn
uniformly in the variables' ranges (numpy generator seeded with --data-seed + the formula's index),
then, in the same process and on the same data:

- ours: kan_core.discovery.discover with Budget(max_seconds=--budget) (the variable names of the
  benchmark, nothing else: discovery never sees the true formula);
- pykan 0.2.8, the seed recipe: KAN(width=[n, 5, 1], grid=5, k=3, seed=--pykan-seed), fit LBFGS 20
  steps (lamb=0.01, lamb_entropy=10), prune, fit 50, auto_symbolic (its default library), fit 50,
  symbolic_formula. It writes files, so it runs in a temporary directory; crashes (e.g. 'lstsq
  failed') are caught and count as failures.

pykan runs in a process of its own, started with ours, so each has one of the machine's two cores
(--threads torch threads each). Both formulas are judged with kan_core.judge.is_solution (shared/benchmarks/README.md); a formula
that is not a solution but has test R² > 0.999 counts as an accurate fit. Both run in float64
(pykan through torch.set_default_dtype), with --threads torch threads.

    .venv/bin/python bench/bench_discovery.py [--only ID ...] [--skip-pykan] [--budget 120] [--threads 1]

--formulas PATH runs another set in the same format, e.g. bench/feynman_holdout.json: Feynman
equations outside the public set, to check that the engine is not tuned to those 16 formulas;
bench/feynman_full.json (all 100 AI Feynman equations, published ranges) and
bench/srbench_classic.json (Nguyen, Keijzer, Vladislavleva-1, R1-R3) are the larger sets.
--noise K adds Gaussian noise of std K * std(y) to the training targets (SRBench's noisy track).
--units runs kan_core.discovery.dimensional.discover_with_units instead of discover: each formula's
published units (its "units" map and "target" unit, e.g. bench/feynman_full.json's, from the AI
Feynman database's units.csv) reduce the search to Buckingham pi groups; the formula itself is
never passed.
The summary gives the solution rate, the accurate-fit rate and the median seconds; each formula's
structure tree (kan_core.recurse, when the "structure" candidate ran) is printed under it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sympy
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_support import summary_line  # noqa: E402
from kan_core.data import Dataset  # noqa: E402
from kan_core.discovery import Budget, discover  # noqa: E402
from kan_core.discovery.dimensional import discover_with_units  # noqa: E402
from kan_core.formula import evaluate_formula  # noqa: E402
from kan_core.judge import is_solution  # noqa: E402
from kan_core.units import DimensionError  # noqa: E402

FORMULAS = ROOT.parent / "shared" / "benchmarks" / "formulas.json"
if not FORMULAS.exists():
    FORMULAS = Path("/work/shared/benchmarks/formulas.json")


def make_data(entry: dict, seed: int, n: int = 1000, noise: float = 0.0) -> tuple[list[str], sympy.Expr, Dataset]:
    """Train and test rows uniform in the entry's ranges; with ``noise`` k > 0, Gaussian noise of std
    k * std(y) is added to the training targets only (SRBench's noisy track), the test stays exact."""
    names = list(entry["variables"])
    symbols = [sympy.Symbol(v) for v in names]
    true = sympy.sympify(entry["formula"], locals=dict(zip(names, symbols)))
    fn = sympy.lambdify(symbols, true, "numpy")
    rng = np.random.default_rng(seed)

    def draw() -> tuple[np.ndarray, np.ndarray]:
        x = np.column_stack([rng.uniform(lo, hi, n) for lo, hi in entry["variables"].values()])
        return x, np.asarray(fn(*x.T), dtype=np.float64)

    (x, y), (xt, yt) = draw(), draw()
    if noise > 0:
        y = y + rng.normal(0.0, noise * float(np.std(y)), y.shape)
    return names, true, Dataset.from_arrays(x, y, xt, yt)


# A base of a benchmark file's "unit_bases" as SI exponents (AI Feynman's units.csv: m, s, kg, T = kelvin, V = volt).
UNIT_BASES = {"m": {"m": 1}, "s": {"s": 1}, "kg": {"kg": 1}, "T": {"K": 1}, "K": {"K": 1}, "A": {"A": 1},
              "V": {"kg": 1, "m": 2, "s": -3, "A": -1}}


def entry_units(entry: dict, bases: list[str]) -> tuple[list[dict], dict]:
    """The inputs' units (in the order of entry["variables"]) and the target's, as SI exponent maps."""
    def si(exps: list[float]) -> dict:
        out: dict = {}
        for base, e in zip(bases, exps):
            for b, k in UNIT_BASES[base].items():
                out[b] = out.get(b, 0) + k * e
        return out

    return [si(entry["units"][v]) for v in entry["variables"]], si(entry["target"]["unit"])


def tree_lines(node: dict | None, depth: int = 0) -> list[str]:
    """A structure tree (CandidateResult.structure) as indented lines: node kind, what justified it, formula."""
    if not node:
        return []
    kind = node.get("node", "?")
    what = {"split": f"{node.get('op')} {node.get('groups')}", "transform": str(node.get("transform")),
            "substitute": f"{node.get('variable')} = {node.get('definition')}",
            "leaf": f"{node.get('source')} {node.get('candidate', '-')}"}.get(kind, "")
    tests = node.get("tests") or node.get("test") or []
    tests = [tests] if isinstance(tests, dict) else tests
    stat = ", ".join(f"{t['test']}({','.join(t['variables'])}; {t['transform']}) stat {t['statistic']}" for t in tests[:2])
    line = f"{'  ' * depth}{kind} {what}" + (f" [{stat}]" if stat else "") + f": {node.get('formula')}"
    return [line] + [x for c in node.get("children", []) for x in tree_lines(c, depth + 1)]


def r2_of(expr: sympy.Expr | None, names: list[str], data: Dataset) -> float | None:
    if expr is None:
        return None
    try:
        pred = evaluate_formula(expr, names, data.test_input)
    except Exception:  # e.g. a formula in unexpected variables
        return None
    y = data.test_label[:, 0].numpy()
    if not np.isfinite(pred).all():
        return None
    return 1 - float(np.sum((pred - y) ** 2)) / float(np.sum((y - y.mean()) ** 2))


def _judge_child(conn, found: str, true: str, names: list[str]) -> None:
    try:
        conn.send(("ok", bool(is_solution(found, true, names))))
    except Exception as exc:  # a formula the judge cannot parse or simplify is not a solution
        conn.send(("error", f"{type(exc).__name__}: {exc}"[:200]))


def judge(found: sympy.Expr | str | None, true: sympy.Expr, names: list[str], timeout: float = 300.0) -> bool:
    """is_solution in a forked child, so that a sympy simplification that runs away (the judge
    simplifies formulas up to 200 operations) costs at most ``timeout`` seconds and counts as no."""
    if found is None:
        return False
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_judge_child, args=(child, str(found), str(true), names), daemon=True)
    proc.start()
    child.close()
    verdict = parent.recv() if parent.poll(timeout) else ("error", f"judge timed out after {timeout:g} s")
    proc.kill()
    proc.join()
    if verdict[0] == "error":
        print(f"    judge: {verdict[1]}")
        return False
    return verdict[1]


def run_ours(data: Dataset, names: list[str], budget: float,
             units: tuple[list[dict], dict] | None = None) -> tuple[sympy.Expr | None, float, str, dict | None]:
    start = time.perf_counter()
    groups = ""
    if units is None:
        out = discover(data, Budget(max_candidates=20, max_seconds=budget), var_names=names)
    else:
        try:
            out, pi = discover_with_units(data, units[0], units[1], Budget(max_candidates=20, max_seconds=budget),
                                          var_names=names)
        except DimensionError as exc:
            return None, time.perf_counter() - start, f"refused: {exc}", None
        except (ValueError, TypeError, ArithmeticError) as exc:  # a bug in the reduction: a failure, shown
            return None, time.perf_counter() - start, f"error: {type(exc).__name__}: {exc}"[:300], None
        groups = (f"units: y = {pi.scale_expr()} * F({', '.join(f'{g}={e}' for g, e in zip(pi.group_names, pi.group_exprs()))}); ")
    seconds = time.perf_counter() - start
    chosen = out.chosen
    trees = [r for r in ([chosen] if chosen is not None else []) + list(out.results) if getattr(r, "structure", None)]
    tree = trees[0].structure if trees else None
    ran = ", ".join(f"{r.spec_id.split('-', 1)[-1]}:{r.status}" + (f"(R2={r.test_r2:.6f})" if r.test_r2 is not None else "")
                    for r in out.results)
    note = f"{groups}stopped={out.stopped}, {len(out.results)} candidates [{ran}]"
    if chosen is None:
        return None, seconds, note, tree
    return chosen.expr, seconds, f"chosen {chosen.spec_id}, {note}", tree


def run_pykan(data: Dataset, names: list[str], seed: int) -> tuple[sympy.Expr | None, float, str]:
    from kan import KAN  # bench only: the reference library

    n = data.n_var
    dataset = {"train_input": data.train_input, "train_label": data.train_label,
               "test_input": data.test_input, "test_label": data.test_label}
    cwd = os.getcwd()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.makedirs("model", exist_ok=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                model = KAN(width=[n, 5, 1], grid=5, k=3, seed=seed, auto_save=False)
                model.fit(dataset, opt="LBFGS", steps=20, lamb=0.01, lamb_entropy=10.0)
                model = model.prune()
                model.fit(dataset, opt="LBFGS", steps=50)
                model.auto_symbolic()
                model.fit(dataset, opt="LBFGS", steps=50)
                formula = model.symbolic_formula()[0][0]
            pk_syms = {sympy.Symbol(f"x_{i + 1}"): sympy.Symbol(v) for i, v in enumerate(names)}
            return sympy.sympify(formula).xreplace(pk_syms), time.perf_counter() - start, ""
        except Exception as exc:  # pykan 0.2.8 crashes on some data (lstsq failed, NaN in curve2coef...)
            return None, time.perf_counter() - start, f"crash: {type(exc).__name__}: {exc}".splitlines()[0][:120]
        finally:
            os.chdir(cwd)


def _pykan_child(entries: list[tuple[int, dict]], data_seed: int, pykan_seed: int, threads: int, conn,
                 noise: float = 0.0) -> None:
    """All pykan runs, one after another, in a process of their own (one core), so that the 2-core machine
    runs pykan beside our discovery instead of after it. Sends (formula id, formula string, seconds, note)."""
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float64)
    for index, entry in entries:
        names, _, data = make_data(entry, data_seed + index, noise=noise)
        expr, seconds, note = run_pykan(data, names, pykan_seed)
        conn.send((entry["id"], None if expr is None else str(expr), seconds, note))
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formulas", type=Path, default=FORMULAS,
                        help=f"benchmark file ({{'formulas': [{{id, formula, variables}}]}}; default {FORMULAS})")
    parser.add_argument("--only", nargs="+", metavar="ID", help="formula ids to run (default: all)")
    parser.add_argument("--skip-pykan", action="store_true")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of discovery per formula")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--pykan-seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.0, metavar="K",
                        help="Gaussian noise of std K * std(y) on the training targets only (SRBench style; default 0)")
    parser.add_argument("--units", action="store_true",
                        help="pass each formula's published units to discovery (discover_with_units; needs 'units' and "
                             "'target' in the benchmark file, e.g. bench/feynman_full.json)")
    parser.add_argument("--json", metavar="PATH", help="also write the per-formula results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)  # pykan builds its tensors in the default dtype
    bench_file = json.loads(args.formulas.read_text())
    entries = bench_file["formulas"]
    if args.only:
        unknown = set(args.only) - {e["id"] for e in entries}
        if unknown:
            parser.error(f"unknown formula id(s): {sorted(unknown)}")
        chosen_ids = set(args.only)
    else:
        chosen_ids = {e["id"] for e in entries}
    print(f"{args.formulas}: {len(entries)} formulas, noise {args.noise:g}{', with units' if args.units else ''}; torch {torch.__version__}, {args.threads} thread(s), float64, budget {args.budget:g} s/formula, "
          f"load average {os.getloadavg()[0]:.1f} at start, {os.cpu_count()} CPUs")

    selected = [(index, entry) for index, entry in enumerate(entries) if entry["id"] in chosen_ids]
    if args.units:
        lacking = [e["id"] for _, e in selected if "units" not in e or "target" not in e]
        if lacking or "unit_bases" not in bench_file:
            parser.error(f"--units: {args.formulas} has no 'unit_bases' or formulas without 'units'/'target': {lacking[:5]}")
    pykan_conn = pykan_proc = None
    if not args.skip_pykan:  # pykan in a process of its own, beside ours (1 core each)
        ctx = multiprocessing.get_context("spawn")
        pykan_conn, child = ctx.Pipe(duplex=False)
        pykan_proc = ctx.Process(target=_pykan_child, args=(selected, args.data_seed, args.pykan_seed, args.threads, child, args.noise))
        pykan_proc.start()
        child.close()

    def score(who: str, expr, seconds: float, note: str, true, names, data) -> dict:
        ok = judge(expr, true, names)
        r2 = r2_of(expr, names, data)
        verdict = "SOLVED" if ok else ("accurate fit" if r2 is not None and r2 > 0.999 else "not solved")
        shown = str(expr) if expr is not None else "-"
        print(f"  {who:5s} {verdict:12s} {seconds:7.1f}s  R2={r2 if r2 is None else round(r2, 9)}  {shown[:160]}")
        if note:
            print(f"        {note[:400]}")
        sys.stdout.flush()
        return {"solved": ok, "verdict": verdict, "seconds": seconds, "r2": r2, "formula": shown, "note": note}

    rows = []
    problems = {}
    for index, entry in selected:
        names, true, data = make_data(entry, args.data_seed + index, noise=args.noise)
        problems[entry["id"]] = (true, names, data)
        print(f"\n[{entry['id']}] {entry['formula']}   (load {os.getloadavg()[0]:.1f})", flush=True)
        row = {"id": entry["id"], "formula": entry["formula"]}
        units = entry_units(entry, bench_file["unit_bases"]) if args.units else None
        expr, seconds, note, tree = run_ours(data, names, args.budget, units)
        row["ours"] = score("ours", expr, seconds, note, true, names, data)
        row["ours"]["structure"] = tree
        for line in tree_lines(tree):
            print(f"        | {line[:200]}")
        rows.append(row)
    if pykan_conn is not None:
        print("\npykan (its own process, started with ours):", flush=True)
        by_id = {row["id"]: row for row in rows}
        for _ in selected:
            formula_id, text, seconds, note = pykan_conn.recv()
            true, names, data = problems[formula_id]
            expr = None if text is None else sympy.sympify(text, locals={v: sympy.Symbol(v) for v in names})
            print(f"[{formula_id}]")
            by_id[formula_id]["pykan"] = score("pykan", expr, seconds, note, true, names, data)
        pykan_proc.join()

    print("\n| formula | ours | s | pykan | s |")
    print("|---|---|---|---|---|")
    for row in rows:
        ours, pk = row["ours"], row.get("pykan")
        print(f"| {row['id']} | {ours['verdict']} | {ours['seconds']:.1f} | "
              + (f"{pk['verdict']} | {pk['seconds']:.1f} |" if pk else "- | - |"))
    for who in ("ours", "pykan"):
        done = [r[who] for r in rows if who in r]
        if not done:
            continue
        print(summary_line(who, done))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
