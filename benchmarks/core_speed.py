"""Speed of the detection core alone, one core, on 1024 px tiles (1152 px with their halo).

Usage: python benchmarks/core_speed.py [--tiles 16] [--keep DIR] [--model FILE]

Two ingested quarters: the satellite-only quarter of ``benchmarks/speed.py`` (4096², a few
dozen planted buildings on quiet ground) and the synthetic demo (2048²: satellite, a drone
orthomosaic and a DSM per epoch, clouds, seasonal fields). On up to ``--tiles`` tile pairs of
each it times, in this process:

* **read**: :func:`pipeline.changes._scene` of both epochs (decode the stored tiles, as the
  changes stage does);
* **core**: :func:`detect.detect_changes`, focused on the windows that can hold change (the
  default) and on the whole tile (``DetectParams(focus=False)``), after one warm-up tile;
* **learned** (with ``--model``, a file from ``tuban train``): the learned scorer
  (:func:`detect.learn.detect_changes_learned`) on up to ``LEARNED_TILES`` of the tiles;

and prints Mpx/s of haloed tile per core, the core's time over the read's, and the peak
resident memory of this process. The process runs as tuban's workers do: numpy without
transparent huge pages unless ``NUMPY_MADVISE_HUGEPAGE`` is set, glibc reusing freed
tile-sized arrays (both made by importing ``pipeline``; see ``pipeline/__init__.py``), and BLAS
and OpenMP on one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")  # before numpy loads, as in pipeline

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from detect import DetectParams, detect_changes
from detect.learn import Model, detect_changes_learned
from pipeline import batch
from pipeline.changes import _files, _scene
from pipeline.config import load_config
from pipeline.demo import make_demo
from pipeline.executors import Executor
from pipeline.ingest import load_index
from pipeline.learn import load_model
from tiles import TileId

sys.path.insert(0, str(Path(__file__).parent))
from speed import make_quarter

#: Tiles the (slower) learned scorer is timed on.
LEARNED_TILES = 4


def ingested(config_path: Path) -> list[tuple[dict, dict, TileId]]:
    """Ingest both epochs (if not yet) and list the tile pairs' stored files."""
    config = load_config(config_path)
    run = config.require_run()
    executor = Executor("processes", progress=False)
    with executor:
        for epoch in (run.before, run.after):
            batch.ingest(config, epoch, executor=executor)
    before, after = load_index(config.work_dir, run.before), load_index(config.work_dir, run.after)
    names = sorted(set(before.tiles) & set(after.tiles))
    return [
        (
            _files(before, name, config.work_dir),
            _files(after, name, config.work_dir),
            TileId.parse(name),
        )
        for name in names
    ]


def measure(config_path: Path, n_tiles: int, model: Model | None = None) -> dict[str, float]:
    config = load_config(config_path)
    grid = config.grid_spec
    pairs = ingested(config_path)
    step = max(1, len(pairs) // n_tiles)
    pairs = pairs[::step][:n_tiles]
    read = np.inf
    for _ in range(2):  # the second time from the page cache, as a steady batch reads
        scenes = None
        start = time.perf_counter()
        scenes = [(_scene(b), _scene(a), tile) for b, a, tile in pairs]
        read = min(read, time.perf_counter() - start)
    side = grid.window_size
    out = {"tiles": len(scenes), "read": len(scenes) * side * side / read / 1e6}
    first = scenes[0]
    detect_changes(first[0], first[1], transform=grid.transform(first[2], halo=True))  # warm-up
    for name, params in (("focused", DetectParams()), ("whole", DetectParams(focus=False))):
        start = time.perf_counter()
        for before, after, tile in scenes:
            detect_changes(
                before,
                after,
                transform=grid.transform(tile, halo=True),
                params=params,
                core=grid.core_slices(),
            )
        out[name] = len(scenes) * side * side / (time.perf_counter() - start) / 1e6
    if model is not None:
        timed = scenes[:LEARNED_TILES]
        start = time.perf_counter()
        for before, after, tile in timed:
            detect_changes_learned(
                before,
                after,
                model=model,
                transform=grid.transform(tile, halo=True),
                core=grid.core_slices(),
            )
        out["learned"] = len(timed) * side * side / (time.perf_counter() - start) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=16, help="Tile pairs timed per quarter.")
    ap.add_argument("--keep", type=Path, help="Folder to make (or reuse) the quarters in.")
    ap.add_argument("--model", type=Path, help="Also time the learned scorer of this model file.")
    args = ap.parse_args()
    threadpool_limits(limits=1)  # as in a worker (pipeline.executors): the timings are per core
    model = load_model(args.model) if args.model else None
    root = args.keep or Path(tempfile.mkdtemp(prefix="tuban-core-"))
    quarters = {}
    quiet = root / "satellite-4096"
    if not (quiet / "quarter.toml").exists():
        make_quarter(quiet, 4096)
    quarters["satellite only, 4096²"] = quiet / "quarter.toml"
    demo = root / "demo-2048"
    if not (demo / "quarter.toml").exists():
        make_demo(demo, size=2048, seed=0)
    quarters["demo (sat + drone + DSM), 2048²"] = demo / "quarter.toml"

    print(
        f"{'quarter':<34} {'tiles':>5} {'read Mpx/s':>10} {'core Mpx/s':>10} "
        f"{'whole-tile Mpx/s':>16} {'core/read':>9}" + (f" {'learned Mpx/s':>13}" if model else "")
    )
    for name, config in quarters.items():
        m = measure(config, args.tiles, model)
        print(
            f"{name:<34} {m['tiles']:>5} {m['read']:>10.1f} {m['focused']:>10.1f} "
            f"{m['whole']:>16.1f} {m['read'] / m['focused']:>9.1f}"
            + (f" {m['learned']:>13.2f}" if model else "")
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "\nMpx/s of haloed tile (1152² px) per core; target: the core keeps pace with reading; "
        f"peak RSS of this process {peak:.0f} MiB"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
