"""Speed and memory of a quarterly batch against reading its inputs and against a GDAL chain.

Usage: python benchmarks/speed.py [--size 8192] [--workers 1 2] [--keep DIR] [--no-gdal]
                                  [--repeat N]

Makes (or, with --keep and an existing DIR, reuses) a quarter of SIZE x SIZE px: two epochs of
4-band uint16 deflate-tiled GeoTIFF at 0.5 m in EPSG:4547 with a few hundred planted buildings,
and reports in one run, side by side:

* the bare decode of both epochs' sources (rasterio, every block, one process);
* ``tuban run`` wall time per stage, peak RSS of any of its processes and the CPU time of all
  of them (pool workers included), for each worker count;
* the bare read of the ingested tiles (what the changes stage has to read);
* the GDAL command-line chain an analyst would otherwise script: ``gdal_calc.py`` change
  magnitude -> ``gdal_sieve.py`` -> ``gdal_polygonize.py`` (Debian ``gdal-bin``);

and the ratios the targets are stated in.

With ``--repeat N`` every measurement is taken N times, in rounds (decode, each run, read, GDAL
chain, then again), and the fastest of each is kept, as ``timeit`` does: on a shared machine a
run is only ever slowed by its neighbours, and the rounds expose every side to the same
moments. The range over the rounds is printed beside each time; peak RSS is the largest seen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import psutil
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

X0, Y0, RES, CRS = 520_000.0, 2_530_000.0, 0.5, "EPSG:4547"
BIN = Path(sys.executable).parent


def make_quarter(root: Path, size: int, seed: int = 0) -> Path:
    """Write two epochs of SIZE x SIZE px, offices and a config; return the config path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_buildings = max(8, size * size // 200_000)
    rows = rng.integers(0, size - 80, n_buildings)
    cols = rng.integers(0, size - 80, n_buildings)
    heights = rng.integers(20, 70, n_buildings)
    widths = rng.integers(20, 70, n_buildings)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=4,
        dtype="uint16",
        crs=CRS,
        transform=Affine(RES, 0, X0, 0, -RES, Y0),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        predictor=2,
        nodata=0,
    )
    strip = 512
    for epoch, gain in (("A", 1.0), ("B", 1.08)):
        path = root / f"sat_{epoch}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            for r0 in range(0, size, strip):
                h = min(strip, size - r0)
                yy = (np.arange(r0, r0 + h) / 97.0)[:, None]
                xx = (np.arange(size) / 131.0)[None, :]
                ground = 1000 + 300 * np.sin(yy) * np.cos(xx)
                data = np.empty((4, h, size), np.float32)
                for b, level in enumerate((0.8, 0.95, 1.05, 2.2)):
                    data[b] = ground * level + rng.normal(0, 20, (h, size))
                if epoch == "B":
                    hit = (rows < r0 + h) & (rows + heights > r0)
                    for r, c, hh, ww in zip(
                        rows[hit], cols[hit], heights[hit], widths[hit], strict=True
                    ):
                        a, b_ = max(r - r0, 0), min(r + hh - r0, h)
                        data[:3, a:b_, c : c + ww] = 2600
                        data[3, a:b_, c : c + ww] = 2300
                data *= gain
                dst.write(np.clip(data, 1, 65535).astype(np.uint16), window=Window(0, r0, size, h))
    side = size * RES
    gpd.GeoDataFrame(
        {"code": ["AA"], "name": ["全域"]},
        geometry=[shapely.box(X0, Y0 - side, X0 + side, Y0)],
        crs=CRS,
    ).to_file(root / "offices.gpkg")
    bands = "bands = { blue = 1, green = 2, red = 3, nir = 4 }"
    config = root / "quarter.toml"
    config.write_text(
        f"""[grid]
crs = "{CRS}"
resolution = {RES}
tile_size = 1024
halo = 64
[offices]
path = "offices.gpkg"
[[epochs]]
id = "A"
date = "2024-03-20"
[[epochs.sources]]
kind = "satellite"
path = "sat_A.tif"
{bands}
[[epochs]]
id = "B"
date = "2024-06-20"
[[epochs.sources]]
kind = "satellite"
path = "sat_B.tif"
{bands}
[run]
before = "A"
after = "B"
""",
        encoding="utf-8",
    )
    return config


def bare_decode(paths: list[Path]) -> float:
    """Seconds to decode every block of every file (one process)."""
    start = time.perf_counter()
    for path in paths:
        with rasterio.open(path) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)
    return time.perf_counter() - start


def bare_read(paths: list[Path]) -> float:
    """Seconds to read every file whole, its bands only (one process): what reading the tile
    store costs at least, whatever its block size."""
    start = time.perf_counter()
    for path in paths:
        with rasterio.open(path) as src:
            src.read()
    return time.perf_counter() - start


def tuban_run(config: Path, workers: int) -> dict:
    """Run ``tuban run`` (the command line, in a fresh process); its stage timings (from the
    manifest) and the peak RSS of any of its processes."""
    root = config.parent
    for folder in ("work", "out"):
        shutil.rmtree(root / folder, ignore_errors=True)
    executor = "serial" if workers == 1 else "processes"
    cmd = [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())", "run"]
    cmd += [str(config), "--executor", executor, "--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, cpu = _poll(proc)
    # The command's own time, start to exit, as a shell's `time` gives it. Its pipes close
    # later: the server the pool's workers forked from holds them until it has unloaded its
    # imports, some 0.2 s after the command has returned.
    wall = time.perf_counter() - start
    _, stderr = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"tuban run failed:\n{stderr}")
    (manifest,) = (root / "out").glob("*/manifest.json")
    result = {"timings": json.loads(manifest.read_text(encoding="utf-8"))["timings_s"]}
    result["wall"] = wall
    # Polled, not getrusage: ru_maxrss misses the forkserver's pool workers, and on Linux a
    # child's ru_maxrss keeps the high-water mark of this (forked) process from before exec.
    result["rss_kib"] = peak // 1024
    result["cpu"] = cpu
    return result


def _poll(proc: subprocess.Popen, every: float = 0.25) -> tuple[int, float]:
    """Largest resident set (bytes) of ``proc`` or any of its descendants while it runs, and
    the CPU time (user + system, s) they had used by the last poll each was seen in.

    The peaks are the kernel's high-water marks, so a rare poll misses none, and a rare poll
    takes little from the run it measures: polled every 50 ms, this process used about 4 % of
    a core, which a run with both cores busy lost and a run with one did not. Between polls it
    waits on ``proc`` itself, so it returns as soon as ``proc`` ends.
    """
    root = psutil.Process(proc.pid)
    peak = 0
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for member in family:
            try:
                peak = max(peak, _peak_rss(member))
                times = member.cpu_times()
                cpu[member.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        try:
            proc.wait(timeout=every)
        except subprocess.TimeoutExpired:
            pass
    return peak, sum(cpu.values())


def _peak_rss(member: psutil.Process) -> int:
    """The largest resident set (bytes) ``member`` has had: the kernel's ``VmHWM`` on Linux,
    its resident set now elsewhere."""
    try:
        with open(f"/proc/{member.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:  # it has just ended
        raise psutil.NoSuchProcess(member.pid) from None
    except OSError:
        pass
    return member.memory_info().rss


def gdal_chain(root: Path) -> dict[str, float]:
    """The GDAL command-line chain on the same pair; seconds per step."""
    a, b = root / "sat_A.tif", root / "sat_B.tif"
    out = root / "gdal"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    letters = "ABCDEFGH"
    inputs = []
    for i in range(4):
        inputs += [f"-{letters[i]}", str(a), f"--{letters[i]}_band={i + 1}"]
        inputs += [f"-{letters[i + 4]}", str(b), f"--{letters[i + 4]}_band={i + 1}"]
    magnitude = "+".join(f"(1.0*{letters[i + 4]}-1.0*{letters[i]})**2" for i in range(4))
    steps = {
        "gdal_calc": [
            "gdal_calc.py",
            *inputs,
            f"--calc=sqrt({magnitude})>600",
            "--type=Byte",
            "--NoDataValue=0",
            "--co=COMPRESS=DEFLATE",
            "--co=TILED=YES",
            f"--outfile={out / 'change.tif'}",
            "--quiet",
        ],
        "gdal_sieve": [
            "gdal_sieve.py",
            "-q",
            "-st",
            "80",
            "-8",
            str(out / "change.tif"),
            str(out / "sieved.tif"),
        ],
        "gdal_polygonize": [
            "gdal_polygonize.py",
            "-q",
            "-f",
            "GPKG",
            str(out / "sieved.tif"),
            str(out / "change.gpkg"),
        ],
    }
    times = {}
    for name, cmd in steps.items():
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times[name] = time.perf_counter() - start
    return times


def _fastest(runs: list[dict]) -> dict:
    """The run of least wall time (with its own CPU time), and the largest peak RSS of all of
    them."""
    best = dict(min(runs, key=lambda r: r["wall"]))
    best["rss_kib"] = max(r["rss_kib"] for r in runs)
    return best


def _spread(times: list[float]) -> str:
    """`` [lo-hi]`` of several times, nothing for one."""
    return f" [{min(times):.2f}-{max(times):.2f}]" if len(times) > 1 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", type=Path, help="Folder to make (or reuse) the quarter in.")
    ap.add_argument("--no-gdal", action="store_true", help="Skip the GDAL chain.")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Take every measurement this many times, in rounds; keep the fastest.",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: give 1 or more rounds")

    root = args.keep or Path(tempfile.mkdtemp(prefix="tuban-speed-"))
    config = root / "quarter.toml"
    t0 = time.perf_counter()
    if not config.exists():
        make_quarter(root, args.size)
    made = time.perf_counter() - t0
    sources = [root / "sat_A.tif", root / "sat_B.tif"]
    mpx = args.size * args.size / 1e6
    gdal_here = not args.no_gdal and shutil.which("gdal_calc.py") is not None
    decodes, reads, gdals = [], [], []
    rounds: dict[int, list[dict]] = {w: [] for w in args.workers}
    for _ in range(args.repeat):
        decodes.append(bare_decode(sources))
        for w in args.workers:
            rounds[w].append(tuban_run(config, w))
        tile_files = sorted((root / "work" / "epochs").rglob("*.tif"))
        reads.append(bare_read(tile_files))
        if gdal_here:
            gdals.append(gdal_chain(root))
    decode, read_tiles = min(decodes), min(reads)
    runs = {w: _fastest(rs) for w, rs in rounds.items()}
    gdal = min(gdals, key=lambda g: sum(g.values())) if gdals else None

    print(
        f"quarter {args.size}x{args.size} px ({mpx:.0f} Mpx per epoch, 2 epochs, 4-band "
        f"uint16 deflate); made in {made:.1f} s; {os.cpu_count()} CPUs"
    )
    if args.repeat > 1:
        print(f"fastest of {args.repeat} rounds of every measurement (range in brackets)")
    print(
        f"bare decode of both epochs' sources: {decode:.2f} s{_spread(decodes)} "
        f"({2 * mpx / decode:.1f} Mpx/s)"
    )
    print(
        f"bare read of the ingested tiles:     {read_tiles:.2f} s{_spread(reads)} "
        f"({len(tile_files)} files)"
    )
    print()
    print(
        f"{'workers':>7} {'ingest s':>8} {'changes s':>9} {'worklists s':>11} {'wall s':>7} "
        f"{'peak RSS MiB':>12} {'CPU s':>6} {'run/decode':>10} {'changes/read':>12}"
    )
    for w, r in runs.items():
        t = r["timings"]
        print(
            f"{w:>7} {t['ingest']:>8.2f} {t['changes']:>9.2f} {t['worklists']:>11.2f} "
            f"{r['wall']:>7.2f} {r['rss_kib'] / 1024:>12.0f} {r['cpu']:>6.1f} "
            f"{r['wall'] / decode:>10.2f} {t['changes'] / read_tiles:>12.2f}"
        )
    if args.repeat > 1:
        for w, rs in rounds.items():
            print(f"{w:>7} worker(s): wall{_spread([r['wall'] for r in rs])}")
    if len(runs) > 1:
        lo, hi = min(runs), max(runs)
        print(
            f"\nspeed-up {lo} -> {hi} workers: {runs[lo]['wall'] / runs[hi]['wall']:.2f}x "
            f"(target >= 1.6x)"
        )
        # Amdahl in two figures: what more workers cost in CPU, and how busy they kept the cores
        print(
            f"CPU of all processes: {runs[lo]['cpu']:.1f} s -> {runs[hi]['cpu']:.1f} s; "
            f"cores busy on average {runs[lo]['cpu'] / runs[lo]['wall']:.2f} -> "
            f"{runs[hi]['cpu'] / runs[hi]['wall']:.2f} of {hi}"
        )
    if gdal is not None:
        total = sum(gdal.values())
        best = min(r["wall"] for r in runs.values())
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in gdal.items())
        spread = _spread([sum(g.values()) for g in gdals])
        print(
            f"GDAL chain: {total:.1f} s{spread} ({steps}); "
            f"tuban run / GDAL chain = {best / total:.2f}"
        )
    print(
        "\ntargets: run/decode <= 3, changes/read <= 1.5, faster than the GDAL chain, "
        "peak RSS <= 1.5 GiB at 16384^2 and within 20 % of the 8192^2 figure"
    )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
