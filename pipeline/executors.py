"""Run a function over many tiles: serially, in a local process pool, or on a Dask cluster.

Whatever the executor, results come back to the driver (the only process that writes
GeoPackages) and are yielded as ``(item, result)`` pairs as they finish, under a progress bar.
Callers that need a stable order sort by item.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Literal, TypeVar

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

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ConfigError(f"executor {self.name!r} is not one of {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be at least 1")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def map(
        self, fn: Callable[[T], R], items: Iterable[T], *, desc: str = ""
    ) -> Iterator[tuple[T, R]]:
        """Apply ``fn`` to every item; yield ``(item, result)`` as each finishes.

        ``fn`` must be a module-level function (it is pickled for process and Dask workers).
        """
        items = list(items)
        bar = tqdm(total=len(items), desc=desc, unit="tile", disable=not self.progress or None)
        try:
            if self.name == "serial" or (self.name == "processes" and self.n_workers == 1):
                for item in items:
                    result = fn(item)
                    bar.update()
                    yield item, result
            elif self.name == "processes":
                yield from self._map_processes(fn, items, bar)
            else:
                yield from self._map_dask(fn, items, bar)
        finally:
            bar.close()

    def _map_processes(self, fn, items, bar):
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(self.n_workers, max(len(items), 1)), mp_context=ctx
        ) as pool:
            futures = {pool.submit(fn, item): item for item in items}
            try:
                for fut in as_completed(futures):
                    bar.update()
                    yield futures[fut], fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def _map_dask(self, fn, items, bar):
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed

        cluster = None
        if self.scheduler:
            client = Client(self.scheduler, timeout="20s")
        else:
            cluster = LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            client = Client(cluster)
        try:
            futures = client.map(fn, items, pure=False)
            index = {f.key: item for f, item in zip(futures, items, strict=True)}
            for fut in dask_completed(futures):
                bar.update()
                yield index[fut.key], fut.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
