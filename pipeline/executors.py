"""Run a function over many tiles: serially, in a local process pool, or on a Dask cluster.

Use an executor as a context manager (or call ``close()``): its process pool or Dask client is
started on first use and serves every stage of a run. Whatever the executor, results come back to the driver (the only process that writes
GeoPackages) and are yielded as ``(item, result)`` pairs as they finish, under a progress bar.
Callers that need a stable order sort by item.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Literal, TypeVar

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from errors import ConfigError

__all__ = ["ExecutorName", "Executor", "EXECUTORS"]

ExecutorName = Literal["serial", "processes", "dask"]
EXECUTORS: tuple[ExecutorName, ...] = ("serial", "processes", "dask")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Executor:
    """How tile jobs run.

    Parameters
    ----------
    name : {"serial", "processes", "dask"}
    workers : int, optional
        Worker processes (default: the number of CPUs). Ignored by ``serial``.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); without it ``dask`` starts a
        :class:`distributed.LocalCluster`.
    progress : bool
        Show a progress bar (on a terminal).
    """

    name: ExecutorName = "serial"
    workers: int | None = None
    scheduler: str | None = None
    progress: bool = True
    _backends: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ConfigError(f"executor {self.name!r} is not one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be at least 1")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        desc: str = "",
        runs: bool = False,
        unit: str = "tile",
    ) -> Iterator[tuple[T, R]]:
        """Apply ``fn`` to every item; yield ``(item, result)`` as each finishes.

        ``fn`` must be a module-level function (it is pickled for process and Dask workers).
        With ``runs``, each worker takes runs of consecutive items rather than one item at a
        time: neighbouring tiles then share the worker's caches. The runs shorten as the items
        run out (see :func:`_runs`), so that no worker idles long while another ends a run. A
        local pool also keeps each worker on a region of its own (see :class:`_Regions`): its
        next run starts where its last one ended, so the source blocks a tile's halo shares
        with the tile before it are still in that worker's cache.
        ``unit`` names the items on the progress bar.
        """
        items = list(items)
        bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not self.progress or None)
        try:
            if self.name == "serial" or (self.name == "processes" and self.n_workers == 1):
                with _blas_one_thread():
                    for item in items:
                        result = fn(item)
                        bar.update()
                        yield item, result
                return
            task = partial(_run, fn)
            if runs and self.name == "processes":
                for chunk, results in self._map_regions(task, items):
                    bar.update(len(chunk))
                    yield from zip(chunk, results, strict=True)
                return
            chunks = _runs(items, self.n_workers) if runs else [[item] for item in items]
            backend = self._map_processes if self.name == "processes" else self._map_dask
            for chunk, results in backend(task, chunks):
                bar.update(len(chunk))
                yield from zip(chunk, results, strict=True)
        finally:
            bar.close()

    def start(self) -> Executor:
        """Start a process pool's workers now, without waiting for them; returns the executor.

        The workers fork from a server process that first imports the stages, which takes about
        a second and a half. Started before the driver's own imports and planning, that time
        overlaps them instead of delaying the first tiles. Other executors start on first use.
        """
        if self.name == "processes" and self.n_workers > 1 and "pool" not in self._backends:
            pool = self._pool()
            threading.Thread(target=_spawn, args=(pool,), name="start workers", daemon=True).start()
        return self

    # -- backends, started on first use and kept until close() ----------------------------------
    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker pool or Dask client this executor started."""
        for backend in reversed(list(self._backends.values())):
            if isinstance(backend, ProcessPoolExecutor):
                backend.shutdown(cancel_futures=True)
            else:  # Dask client, then its LocalCluster
                backend.close()
        self._backends.clear()

    def _pool(self) -> ProcessPoolExecutor:
        if "pool" not in self._backends:
            # Workers fork from a clean server process that has imported the stages once.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["pipeline.changes", "pipeline.ingest", "pipeline.chips"])
            self._backends["pool"] = ProcessPoolExecutor(max_workers=self.n_workers, mp_context=ctx)
        return self._backends["pool"]

    def _client(self):
        if "client" not in self._backends:
            from distributed import Client, LocalCluster

            if self.scheduler:
                self._backends["client"] = Client(self.scheduler, timeout="20s")
            else:
                cluster = LocalCluster(
                    n_workers=self.n_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                self._backends["cluster"] = cluster
                self._backends["client"] = Client(cluster)
        return self._backends["client"]

    def _map_processes(self, fn, items):
        pool = self._pool()
        futures = {pool.submit(fn, item): item for item in items}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def _map_regions(self, fn, items):
        """Runs of ``items`` through the pool, one per worker at a time, each worker's next run
        from its own region of the items (see :class:`_Regions`).

        Only as many runs as workers are out at once, so the run submitted when one finishes
        goes to the worker that just finished it, the only one idle.
        """
        pool = self._pool()
        plan = _Regions(len(items), self.n_workers)
        running = {}

        def submit(region: int) -> None:
            taken = plan.take(region)
            if taken is not None:
                region, run = taken
                running[pool.submit(fn, items[run])] = (region, run)

        for region in range(self.n_workers):
            submit(region)
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    region, run = running.pop(fut)
                    results = fut.result()
                    submit(region)  # before the caller handles the results
                    yield items[run], results
        finally:
            for fut in running:
                fut.cancel()

    def _map_dask(self, fn, items):
        from distributed import as_completed as dask_completed

        futures = self._client().map(fn, items, pure=False)
        index = {f.key: item for f, item in zip(futures, items, strict=True)}
        try:
            for fut in dask_completed(futures):
                yield index[fut.key], fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def _runs(items: list[T], workers: int) -> list[list[T]]:
    """Consecutive runs of the items, each a half of what is left per worker when it is cut
    ("guided" scheduling): long runs first, single items last."""
    out, start = [], 0
    while start < len(items):
        size = _run_size(len(items) - start, workers)
        out.append(items[start : start + size])
        start += size
    return out


def _run_size(left: int, workers: int) -> int:
    """A half of what is left per worker, rounded up: the length of the next guided run."""
    return -(-left // (2 * workers))


class _Regions:
    """Which run of ``n`` consecutive items each of ``workers`` takes next.

    The items are first cut into one region of consecutive items per worker. A worker takes
    its runs from the front of its own region, so each run starts where its last one ended;
    a run is a half of what is left per worker (as in :func:`_runs`), but no more than its
    region holds. A worker whose region is used up takes the back half of the largest region
    left as its own, so the owner of that region keeps going where it was.
    """

    def __init__(self, n: int, workers: int) -> None:
        self.left = n
        self.workers = workers
        self.bounds = [[k * n // workers, (k + 1) * n // workers] for k in range(workers)]

    def take(self, region: int) -> tuple[int, slice] | None:
        """The region the worker of ``region`` is on now, and its next run; None when every
        item has been taken."""
        if self.left == 0:
            return None
        lo, hi = self.bounds[region]
        if lo == hi:  # this region is done: take over the back of the largest one left
            victim = max(
                range(len(self.bounds)), key=lambda k: self.bounds[k][1] - self.bounds[k][0]
            )
            v_lo, v_hi = self.bounds[victim]
            middle = v_lo + (v_hi - v_lo) // 2
            self.bounds[victim][1] = middle
            region = len(self.bounds)
            self.bounds.append([middle, v_hi])
            lo, hi = middle, v_hi
        size = min(_run_size(self.left, self.workers), hi - lo)
        self.bounds[region][0] = lo + size
        self.left -= size
        return region, slice(lo, lo + size)


def _spawn(pool: ProcessPoolExecutor) -> None:
    """Have ``pool`` start a worker (the pool spawns its workers as tasks arrive); blocks until
    the server the workers fork from has imported the stages."""
    try:
        pool.submit(os.getpid)
    except RuntimeError:  # the pool was shut down first
        pass


def _run(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``fn`` over a run of items, in one worker."""
    _one_thread()
    return [fn(item) for item in items]


def _blas_one_thread() -> threadpool_limits:
    """BLAS on one thread while the serial executor runs its items in this process. The
    core's matrix products are small: a second BLAS thread gains nothing on them, and between
    calls it spins on the core the rest of the work needs (the changes stage of the 8192²
    benchmark quarter took 28 s of CPU instead of 18). OpenMP (the learned scorer's
    predictions) keeps its threads."""
    return threadpool_limits(limits=1, user_api="blas")


@cache
def _one_thread() -> threadpool_limits:
    """Keep BLAS and OpenMP to one thread in this worker process, once: the workers are the
    parallelism, and idle BLAS threads spinning beside another worker's tile slow it down."""
    return threadpool_limits(limits=1)
