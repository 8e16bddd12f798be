"""Accuracy of the quarterly batch on the synthetic demo quarter, object by object.

Usage: python benchmarks/demo_accuracy.py [--size 4096] [--seed 0 1 2] [--executor processes]

Rule (pipeline.scoring): a task is correct if >= 50 % of its area lies on a planted non-permitted
change; a planted change is found if tasks cover >= 50 % of its area. Prints one table row per
seed and kind, then the targets: recall >= 0.90, precision >= 0.80, no permitted building issued.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline import batch
from pipeline.config import load_config
from pipeline.demo import make_demo
from pipeline.executors import Executor
from pipeline.scoring import score_demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    ap.add_argument("--executor", default="processes", choices=["serial", "processes", "dask"])
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    executor = Executor(args.executor, workers=args.workers, progress=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuban-bench-") as tmp:
        for seed in args.seed:
            t0 = time.perf_counter()
            demo = make_demo(Path(tmp) / f"seed{seed}", size=args.size, seed=seed)
            t_make = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = batch.run(load_config(demo.config), executor=executor)
            t_run = time.perf_counter() - t0
            s = score_demo(report.out_dir, demo.truth)
            rows.append((seed, s, t_make, t_run))
    print(f"demo {args.size}x{args.size} px at 0.5 m, executor={args.executor}")
    print(f"{'seed':>4} {'kind':<14} {'found':>5} {'planted':>7} {'recall':>6}")
    for seed, s, _, _ in rows:
        for kind, (found, planted) in sorted(s.found_by_kind.items()):
            print(f"{seed:>4} {kind:<14} {found:>5} {planted:>7} {found / max(planted, 1):>6.2f}")
    print()
    print(
        f"{'seed':>4} {'recall':>6} {'precision':>9} {'tasks':>5} {'permitted issued':>16} "
        f"{'make s':>6} {'run s':>6}"
    )
    for seed, s, t_make, t_run in rows:
        print(
            f"{seed:>4} {s.recall:>6.3f} {s.precision:>9.3f} {s.tasks:>5} "
            f"{s.permitted_issued:>6}/{s.permitted:<9} {t_make:>6.1f} {t_run:>6.1f}"
        )
    recall = sum(s.found for _, s, _, _ in rows) / max(sum(s.planted for _, s, _, _ in rows), 1)
    correct = sum(s.correct for _, s, _, _ in rows)
    precision = correct / max(sum(s.tasks for _, s, _, _ in rows), 1)
    issued = sum(s.permitted_issued for _, s, _, _ in rows)
    print()
    print(
        f"overall: recall {recall:.3f} (target >= 0.90), precision {precision:.3f} "
        f"(target >= 0.80), permitted issued {issued} (target 0)"
    )


if __name__ == "__main__":
    main()
