"""Executors: the same outputs from serial, processes and Dask (a real scheduler and worker
started as separate processes), and a run killed with SIGKILL that resumes to the same result."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import psutil
import pytest
import rasterio
from threadpoolctl import threadpool_info

from pipeline import batch
from pipeline.config import load_config
from pipeline.demo import make_demo
from pipeline.executors import Executor, _Regions, _runs

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def small_quarter(tmp_path_factory):
    """The 1024 px demo on 256 px tiles: 20-odd tile pairs, each quick to detect."""
    root = tmp_path_factory.mktemp("quarter")
    demo = make_demo(root, size=1024, seed=5)
    text = demo.config.read_text(encoding="utf-8")
    text = text.replace("tile_size = 1024", "tile_size = 256").replace("halo = 64", "halo = 48")
    demo.config.write_text(text, encoding="utf-8")
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("work", "out"))
    return dst / "quarter.toml"


def _outputs(config_path: Path) -> tuple[list, list, list]:
    q = load_config(config_path)
    gpkg = batch.quarter_dir(q) / f"{q.quarter}.gpkg"
    suspects = gpd.read_file(gpkg, layer="suspects")
    tasks = gpd.read_file(gpkg, layer="tasks")
    return (
        list(suspects["suspect_id"]),
        [g.wkb for g in suspects.geometry],
        list(zip(tasks["task_id"], [g.wkb for g in tasks.geometry], strict=True)),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serial_processes_and_dask_cluster_agree(small_quarter, tmp_path):
    serial = _copy(small_quarter, tmp_path / "serial")
    batch.run(load_config(serial), executor=Executor("serial", progress=False))
    expected = _outputs(serial)
    assert expected[0], "the small quarter should have suspects"

    procs = _copy(small_quarter, tmp_path / "processes")
    batch.run(load_config(procs), executor=Executor("processes", workers=2, progress=False))
    assert _outputs(procs) == expected

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    worker = subprocess.Popen(
        [BIN / "dask", "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        on_dask = _copy(small_quarter, tmp_path / "dask")
        batch.run(
            load_config(on_dask), executor=Executor("dask", scheduler=address, progress=False)
        )
        assert _outputs(on_dask) == expected
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
            proc.wait(timeout=30)


def test_sigkilled_run_resumes_to_identical_outputs(small_quarter, tmp_path):
    whole = _copy(small_quarter, tmp_path / "whole")
    batch.run(load_config(whole), executor=Executor("serial", progress=False))

    killed = _copy(small_quarter, tmp_path / "killed")
    tile_dir = killed.parent / "work" / "changes" / "2024Q1__2024Q2"
    proc = subprocess.Popen(
        [BIN / "tuban", "run", str(killed), "--executor", "serial"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if tile_dir.is_dir() and len(list(tile_dir.glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(tile_dir.glob("*.json")))
    # whatever the kill interrupted, every file under its final name is whole
    for path in (killed.parent / "work").rglob("*.tif"):
        with rasterio.open(path) as src:
            src.read()
    for path in (killed.parent / "work").rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))

    result = subprocess.run(
        [BIN / "tuban", "run", str(killed), "--resume"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert _outputs(killed) == _outputs(whole)
    assert finished >= 3


def test_runs_of_items_give_every_item_its_own_result():
    items = list(range(-13, 0))
    with Executor("processes", workers=2, progress=False) as executor:
        got = dict(executor.map(abs, items, runs=True))
        assert dict(executor.map(abs, [], runs=True)) == {}
    assert got == {i: -i for i in items}


def test_start_brings_up_the_workers_before_the_first_map():
    me = psutil.Process()
    before = len(me.children(recursive=True))
    Executor("serial").start()
    Executor("processes", workers=1).start()  # one worker runs in this process
    assert len(me.children(recursive=True)) == before
    with Executor("processes", workers=2, progress=False) as executor:
        assert executor.start() is executor
        deadline = time.monotonic() + 120
        while len(me.children(recursive=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the server the workers fork from, and a worker forked from it
        assert len(me.children(recursive=True)) >= 2
        executor.start()  # again: the same pool
        assert dict(executor.map(abs, [-3, -2, 1])) == {-3: 3, -2: 2, 1: 1}


@pytest.mark.parametrize("n, workers", [(0, 2), (1, 1), (13, 2), (162, 2), (81, 8)])
def test_runs_are_consecutive_and_shorten_to_single_items(n, workers):
    items = list(range(n))
    runs = _runs(items, workers)
    assert [i for run in runs for i in run] == items
    sizes = [len(run) for run in runs]
    assert sizes == sorted(sizes, reverse=True)
    if n:
        assert sizes[0] == -(-n // (2 * workers))
        assert sizes[-1] == 1


@pytest.mark.parametrize("n, workers", [(0, 2), (1, 1), (1, 2), (13, 2), (162, 2), (81, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_worker_keeps_to_a_region_and_takes_over_the_back_of_the_largest(n, workers, seed):
    rng = np.random.default_rng(seed)
    plan = _Regions(n, workers)
    on = list(range(workers))  # the region each worker is on
    taken, last_end = [], {}
    while True:
        worker = int(rng.integers(workers))  # the one that finished first
        before = [list(b) for b in plan.bounds]
        step = plan.take(on[worker])
        if step is None:
            break
        region, run = step
        assert run.stop > run.start
        if region == on[worker]:  # it goes on where its last run ended
            assert run.start == last_end.get(region, before[region][0])
        else:  # its region was used up: it took the back half of the largest one left
            assert before[on[worker]][0] == before[on[worker]][1]
            sizes = [hi - lo for lo, hi in before]
            victim = sizes.index(max(sizes))
            assert plan.bounds[victim] == [before[victim][0], run.start]
            assert before[victim][1] - run.start == (sizes[victim] + 1) // 2
        on[worker], last_end[region] = region, run.stop
        taken += range(run.start, run.stop)
    assert sorted(taken) == list(range(n))  # every item, once
    assert all(plan.take(k) is None for k in range(len(plan.bounds)))


def _blas_threads(_item=None) -> int:
    return max(
        (info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"),
        default=1,
    )


def test_serial_map_runs_its_items_with_blas_on_one_thread():
    outside = _blas_threads()
    assert dict(Executor("serial", progress=False).map(_blas_threads, [1, 2])) == {1: 1, 2: 1}
    assert _blas_threads() == outside  # restored once the map is done


_PAGE_FAULTS = """
import resource, numpy as np, pipeline
np.ones(5_000_000, np.float32)  # a tile-sized array (20 MB), freed at once
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
again = np.ones(5_000_000, np.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_a_freed_tile_sized_array_is_reused_without_page_faults():
    def faults(**env) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _PAGE_FAULTS],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        return int(run.stdout)

    pages = 5_000_000 * 4 // 4096
    # The environment's own choice wins: arrays over 1 MB mapped afresh fault in every page.
    assert faults(MALLOC_MMAP_THRESHOLD_="1048576") > pages // 2
    assert faults() < pages // 10
