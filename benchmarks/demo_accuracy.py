"""Accuracy of the quarterly batch on the synthetic demo quarter, object by object.

Usage: python benchmarks/demo_accuracy.py [--size 4096] [--seed 0 1 2] [--executor processes]
                                          [--keep DIR]

Rule (pipeline.scoring): a task is correct if >= 50 % of its area lies on a planted non-permitted
change; a planted change is found if tasks cover >= 50 % of its area. Prints one table row per
seed and kind, one per seed and cover (the drone block, where both epochs have a DSM, and the
area the satellite alone covers), then the targets: in the drone block recall >= 0.95 at
precision >= 0.90; overall recall >= 0.90, precision >= 0.80; no permitted building issued.
``--keep DIR`` keeps each seed's demo and outputs under ``DIR/seed<N>``.
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
from pipeline.scoring import COVERS, ObjectScore, score_demo, score_demo_by_cover


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    ap.add_argument("--executor", default="processes", choices=["serial", "processes", "dask"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--keep", type=Path, help="keep each seed's demo and outputs here")
    args = ap.parse_args()
    executor = Executor(args.executor, workers=args.workers, progress=False)
    rows, covers = [], []
    with tempfile.TemporaryDirectory(prefix="tuban-bench-") as tmp:
        root = args.keep or Path(tmp)
        for seed in args.seed:
            t0 = time.perf_counter()
            demo = make_demo(root / f"seed{seed}", size=args.size, seed=seed)
            t_make = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = batch.run(load_config(demo.config), executor=executor)
            t_run = time.perf_counter() - t0
            s = score_demo(report.out_dir, demo.truth)
            rows.append((seed, s, t_make, t_run))
            covers.append((seed, score_demo_by_cover(report.out_dir, demo.truth)))
    print(f"demo {args.size}x{args.size} px at 0.5 m, executor={args.executor}")
    print(f"{'seed':>4} {'kind':<14} {'found':>5} {'planted':>7} {'recall':>6}")
    for seed, s, _, _ in rows:
        for kind, (found, planted) in sorted(s.found_by_kind.items()):
            print(f"{seed:>4} {kind:<14} {found:>5} {planted:>7} {found / max(planted, 1):>6.2f}")
    print()
    print(
        f"{'seed':>4} {'cover':<14} {'found':>5} {'planted':>7} {'recall':>6} {'correct':>7} "
        f"{'tasks':>5} {'precision':>9}"
    )
    for seed, by_cover in covers:
        for cover, c in by_cover.items():
            print(
                f"{seed:>4} {cover:<14} {c.found:>5} {c.planted:>7} {c.recall:>6.3f} "
                f"{c.correct:>7} {c.tasks:>5} {c.precision:>9.3f}"
            )
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
    drone = _pooled([by_cover[COVERS[0]] for _, by_cover in covers])
    print()
    print(
        f"drone block (DSM in both epochs): recall {drone.recall:.3f} (target >= 0.95), "
        f"precision {drone.precision:.3f} (target >= 0.90)"
    )
    print(
        f"overall: recall {recall:.3f} (target >= 0.90), precision {precision:.3f} "
        f"(target >= 0.80), permitted issued {issued} (target 0)"
    )


def _pooled(scores: list[ObjectScore]) -> ObjectScore:
    """The scores of several runs as one (counts summed)."""
    total = {
        name: sum(getattr(s, name) for s in scores)
        for name in ("planted", "found", "tasks", "correct", "permitted", "permitted_issued")
    }
    return ObjectScore(**total, found_by_kind={})


if __name__ == "__main__":
    main()
