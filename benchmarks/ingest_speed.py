"""Ingest throughput against a plain rasterio read of the same sources.

Usage: python benchmarks/ingest_speed.py [--size 4096] [--workers 1]

Two quarters: the synthetic demo (satellite mosaic in the grid CRS, a UTM drone RGBA
orthomosaic at 0.1 m, a UTM DSM at 0.2 m) and, when ../shared/realdata is there, the xView2
Joplin tiles (EPSG:26915 and EPSG:4326 onto EPSG:32615 at 0.6 m). For each epoch it times:

* the plain read: every block of every source file with rasterio, no reprojection;
* ``tuban ingest``: reprojection onto the grid and the tile store, from an empty work folder;

and prints Mpx/s of grid output (core tile pixels written, all kinds) and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import rasterio
import shapely

from pipeline.config import load_config
from pipeline.demo import make_demo
from pipeline.executors import Executor
from pipeline.ingest import ingest_epoch

JOPLIN = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "xView2-Joplin"


def plain_read(paths: list[Path]) -> tuple[float, float]:
    """Seconds and source Mpx to read every block of every band of every file."""
    start, mpx = time.perf_counter(), 0.0
    for path in paths:
        with rasterio.open(path) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)
            mpx += src.width * src.height / 1e6
    return time.perf_counter() - start, mpx


def joplin_config(root: Path) -> Path:
    gpd.GeoDataFrame(
        {"code": ["JP"], "name": ["Joplin"]},
        geometry=[shapely.box(366_700, 4_103_300, 367_850, 4_104_240)],
        crs="EPSG:32615",
    ).to_file(root / "offices.gpkg")
    path = root / "quarter.toml"
    path.write_text(
        f"""[grid]
crs = "EPSG:32615"
resolution = 0.6
[offices]
path = "offices.gpkg"
[[epochs]]
id = "pre"
date = "2011-05-01"
[[epochs.sources]]
kind = "satellite"
path = "{JOPLIN}/input_pre/*.tif"
[[epochs]]
id = "post"
date = "2011-05-23"
[[epochs.sources]]
kind = "satellite"
path = "{JOPLIN}/input_post/*.tif"
""",
        encoding="utf-8",
    )
    return path


def measure(name: str, config_path: Path, executor: Executor) -> list[tuple]:
    config = load_config(config_path)
    grid = config.grid_spec
    rows = []
    for epoch in config.epochs:
        files = [f for s in epoch.sources for f in config.source_files(epoch.id, s)]
        t_read, src_mpx = plain_read(files)
        shutil.rmtree(config.work_dir / "epochs" / epoch.id, ignore_errors=True)
        start = time.perf_counter()
        index = ingest_epoch(config, epoch.id, executor=executor)
        t_ingest = time.perf_counter() - start
        out_mpx = sum(len(kinds) for kinds in index.tiles.values()) * grid.tile_size**2 / 1e6
        rows.append((name, epoch.id, len(files), src_mpx, t_read, out_mpx, t_ingest))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="Demo size in 0.5 m pixels.")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    executor = Executor(
        "serial" if args.workers == 1 else "processes", workers=args.workers, progress=False
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuban-ingest-") as tmp, executor:
        demo = make_demo(Path(tmp) / "demo", size=args.size)
        rows += measure(f"demo {args.size}", demo.config, executor)
        if JOPLIN.is_dir():
            root = Path(tmp) / "joplin"
            root.mkdir()
            rows += measure("joplin", joplin_config(root), executor)
    print(f"workers={args.workers}")
    print(
        f"{'quarter':<10} {'epoch':<7} {'files':>5} {'src Mpx':>8} {'read s':>7} "
        f"{'read Mpx/s':>10} {'grid Mpx':>8} {'ingest s':>8} {'ingest Mpx/s':>12} "
        f"{'ingest/read':>11}"
    )
    for name, epoch, n, src_mpx, t_read, out_mpx, t_ingest in rows:
        print(
            f"{name:<10} {epoch:<7} {n:>5} {src_mpx:>8.1f} {t_read:>7.2f} "
            f"{src_mpx / t_read:>10.1f} {out_mpx:>8.1f} {t_ingest:>8.2f} "
            f"{out_mpx / t_ingest:>12.1f} {t_ingest / t_read:>11.2f}"
        )


if __name__ == "__main__":
    main()
