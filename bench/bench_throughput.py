"""Training throughput (issues 2, 14): kan_core vs pykan 0.2.8 vs an MLP of the same parameter count.

One training step = forward, regulariser (lamb > 0), backward, Adam update, on a float32 batch of
4096 rows for width [8, 64, 64, 1], grid 10, k 3:

- kan_core: what ``kan_core.train.fit(opt="Adam")`` runs per step: ``kan_core.fast_objective.objective``
            (MSE + lamb * reg with its gradient by hand, ``precise=False``; the first layer's feature
            cache off, so every step computes all features, as a new batch would), then Adam; ``--autograd``: ``forward_with_reg`` and
            ``loss.backward()`` instead (the path of networks fast_objective does not cover);
- pykan:    ``model(x)`` with ``save_act`` (its activations for the regulariser),
            ``model.get_reg("edge_forward_spline_n", ...)`` (what its ``fit`` uses), Adam;
            symbolic branch off, as ``fit`` does when no edge is symbolic;
- MLP:      Linear-SiLU-Linear-SiLU-Linear with hidden width h chosen so that its parameter count
            matches kan_core's trainable spline parameters (coef, scale_base, scale_sp), MSE, Adam.

Time: the median of ``--steps`` steps after ``--warmup`` steps (``time.perf_counter``; the CPU
time of the process, all threads, is printed too: on a shared machine it is the steadier figure).
Memory: every contender runs in a fresh subprocess; its peak is ``ru_maxrss`` after the timed steps
minus the resident set size just before the first step (model, optimiser and batch already built).
Torch's CPU allocator is plain malloc, so tracemalloc does not see tensors; the RSS high-water mark
does, including allocator overhead, for every contender alike.

All contenders use ``torch.set_num_threads(--threads)``. pykan writes checkpoint folders into the
working directory, so its subprocess runs in a temporary directory. Run from the repository root:

    .venv/bin/python bench/bench_throughput.py               # full run
    .venv/bin/python bench/bench_throughput.py --quick       # 5 timed steps, 1 warm-up
    .venv/bin/python bench/bench_throughput.py --busy        # with a spinning process on one core
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH, GRID, K, BATCH, LAMB = [8, 64, 64, 1], 10, 3, 4096, 0.01
CONTENDERS = ("kan_core", "pykan", "mlp")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def kan_spline_params() -> int:
    edges = sum(a * b for a, b in zip(WIDTH[:-1], WIDTH[1:]))
    return edges * (GRID + K + 2)  # coef (G + k) + scale_base + scale_sp per edge


def mlp_hidden(n_params: int) -> int:
    """Largest h with 8h + h + h*h + h + h + 1 <= n_params for [8, h, h, 1]."""
    h = 1
    while (h + 1) ** 2 + 11 * (h + 1) + 1 <= n_params:
        h += 1
    return h


def build(name: str, torch, autograd: bool = False):
    """(step function, parameter count) for one contender."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, WIDTH[0], generator=gen) * 2 - 1
    y = torch.sin(x.sum(1, keepdim=True))

    if name == "kan_core":
        sys.path.insert(0, str(ROOT))
        from kan_core import fast_objective
        from kan_core.model import KAN
        from kan_core.train import forward_with_reg

        model = KAN(WIDTH, grid=GRID, k=K, seed=0, dtype=torch.float32)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        by_hand = not autograd and fast_objective.supports(model, LAMB, 0.0, 0.0)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            if by_hand:  # fit(opt="Adam")'s step: lamb_l1 1, lamb_entropy 2, precise=False
                fast_objective.objective(model, x, y, LAMB, 1.0, 2.0, False, None)
            else:
                pred, reg = forward_with_reg(model, x, 1.0, 2.0, precise=False)
                ((pred - y).pow(2).mean() + LAMB * reg).backward()
            opt.step()

        n = sum(p.numel() for n_, p in model.named_parameters() if not n_.endswith("sym_affine"))
        return step, n

    if name == "pykan":
        from kan import KAN as PyKAN

        model = PyKAN(width=list(WIDTH), grid=GRID, k=K, seed=0, auto_save=False, device="cpu")
        model.symbolic_enabled = False  # fit() does this when no edge is symbolic
        model.save_act = True  # needed by the regulariser
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            pred = model(x)
            reg = model.get_reg("edge_forward_spline_n", 1.0, 2.0, 0.0, 0.0)
            loss = (pred - y).pow(2).mean() + LAMB * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        n = sum(p.numel() for l in model.act_fun for p in (l.coef, l.scale_base, l.scale_sp))
        return step, n

    if name == "mlp":
        h = mlp_hidden(kan_spline_params())
        g = torch.Generator().manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(WIDTH[0], h), torch.nn.SiLU(), torch.nn.Linear(h, h), torch.nn.SiLU(), torch.nn.Linear(h, 1)
        )
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.1, 0.1, generator=g)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step, sum(p.numel() for p in model.parameters())

    raise ValueError(f"unknown contender {name!r}")


def worker(name: str, threads: int, warmup: int, steps: int, autograd: bool = False) -> dict:
    import torch

    torch.set_num_threads(threads)
    step, n_params = build(name, torch, autograd)
    rss0 = rss_bytes()
    for _ in range(warmup):
        step()
    times, cpu = [], []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "name": name,
        "params": n_params,
        "step_ms": 1e3 * statistics.median(times),
        "step_ms_min": 1e3 * min(times),
        "cpu_ms": 1e3 * statistics.median(cpu),
        "peak_mb": (peak - rss0) / 2**20,
        "threads": threads,
        "torch": torch.__version__,
    }


# glibc returns freed blocks above these sizes to the OS at once, so a training step that frees
# and re-allocates ~100 MB of activations page-faults them in again on every step (~1/4 of the
# step's CPU time here). --keep-freed-memory raises both limits for every contender alike.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def run(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--threads", str(args.threads),
           "--warmup", str(args.warmup), "--steps", str(args.steps)] + (["--autograd"] if args.autograd else [])
    env = {**os.environ, **(KEEP_FREED_MEMORY if args.keep_freed_memory else {})}
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}_") as cwd:
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="1 warm-up and 5 timed steps")
    ap.add_argument("--only", choices=CONTENDERS, action="append", help="run only these contenders")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="run every contender with glibc's mmap/trim thresholds raised to 1 GiB")
    ap.add_argument("--autograd", action="store_true", help="kan_core through autograd, not fast_objective")
    ap.add_argument("--busy", action="store_true", help="keep one core busy with a spinning process meanwhile")
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.steps = 1, 5
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.warmup, args.steps, args.autograd)))
        return

    load0 = f"{os.getloadavg()[0]:.2f}"
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        res = {name: run(name, args) for name in (args.only or CONTENDERS)}
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    print(f"width {WIDTH}, grid {GRID}, k {K}, batch {BATCH}, float32, Adam, lamb {LAMB}; "
          f"{args.threads} threads, median of {args.steps} steps after {args.warmup} warm-up; torch {res[next(iter(res))]['torch']}"
          + ("; glibc keeps freed memory" if args.keep_freed_memory else ""))
    print(f"load average before: {load0}, after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)"
          + ("; a spinning process kept one core busy throughout (--busy)" if args.busy else "")
          + ("; kan_core through autograd (--autograd)" if args.autograd else ""))
    print(f"{'contender':<10} {'params':>8} {'ms/step':>9} {'(min)':>8} {'cpu ms':>8} {'peak MB':>9}")
    for r in res.values():
        print(f"{r['name']:<10} {r['params']:>8} {r['step_ms']:>9.1f} {r['step_ms_min']:>8.1f} {r['cpu_ms']:>8.1f} {r['peak_mb']:>9.1f}")
    if "kan_core" in res:
        kc = res["kan_core"]
        if "pykan" in res:
            py = res["pykan"]
            speed, mem = py["step_ms"] / kc["step_ms"], kc["peak_mb"] / py["peak_mb"]
            print(f"pykan / kan_core time:   {speed:6.1f}x  (target >= 20x)  {'ok' if speed >= 20 else 'MISSED'}")
            print(f"kan_core / pykan memory: {mem:6.3f}   (target <= 0.25)  {'ok' if mem <= 0.25 else 'MISSED'}")
        if "mlp" in res:
            ratio = kc["step_ms"] / res["mlp"]["step_ms"]
            print(f"kan_core / MLP time:     {ratio:6.2f}x  (target <= 2x)   {'ok' if ratio <= 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
