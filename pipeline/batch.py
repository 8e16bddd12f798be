"""The quarterly batch: ingest → changes → worklists, one function per stage and one for all.

Each stage reads what the previous one wrote (epoch tile stores, the changes GeoPackage), so a
stage can be re-run alone from the CLI. ``run`` writes ``manifest.json`` last: inputs with
checksums, the config, library versions and per-stage timings.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .changes import ChangeSet, detect_quarter, read_changes
from .chips import write_chips
from .config import Config
from .executors import Executor
from .export import write_quarter
from .ingest import EpochIndex, ingest_epoch, ingest_epochs
from .manifest import input_checksums, write_manifest
from .register import earlier_tasks, read_register, record_quarter
from .tasks import TaskRules, TaskSet, build_tasks
from .vectors import read_offices, read_permits

T = TypeVar("T")

__all__ = ["BatchReport", "changes", "ingest", "quarter_dir", "run", "worklists"]


@dataclass
class BatchReport:
    """What a batch did: where its outputs are, what it counted and how long each stage took."""

    quarter: str
    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(report: BatchReport, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    report.timings[stage] = round(report.timings.get(stage, 0.0) + time.perf_counter() - start, 3)


def _in_background(fn: Callable[..., T], *args: Any) -> Future[T]:
    """``fn(*args)`` in a daemon thread: a batch that fails does not wait for it to end.

    On Linux the thread runs at the lowest CPU priority, so that it takes the time the workers
    leave (the driver's own stretches between stages) rather than theirs."""
    future: Future[T] = Future()

    def work() -> None:
        if sys.platform.startswith("linux"):  # niceness is per thread there
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=work, name=fn.__name__, daemon=True).start()
    return future


def quarter_dir(config: Config) -> Path:
    """``<out>/<quarter>/``: where a quarter's outputs go."""
    return config.out_dir / config.quarter


def ingest(config: Config, epoch_id: str, *, executor: Executor | None = None) -> EpochIndex:
    """Stage 1: put one epoch onto the grid (tiles whose inputs are unchanged are kept)."""
    return ingest_epoch(config, epoch_id, executor=executor or Executor())


def changes(config: Config, *, executor: Executor | None = None, resume: bool = False) -> ChangeSet:
    """Stage 2: suspects for ``[run].before → [run].after`` from the two tile stores.

    With ``resume``, tiles finished by an earlier (interrupted) run are not detected again.
    """
    return detect_quarter(config, executor=executor or Executor(), resume=resume)


def worklists(
    config: Config,
    *,
    lang: str = "zh",
    issued_at: datetime | None = None,
    executor: Executor | None = None,
) -> tuple[TaskSet, dict]:
    """Stage 3: suspects → tasks (offices, permits, earlier tasks, IDs) → the register, the
    quarter's GeoPackage and the office worklists with image chips (the chips and the offices'
    sheets made on ``executor``'s workers when given)."""
    grid = config.grid_spec
    run_cfg = config.require_run()
    change_set = read_changes(config)
    offices = read_offices(
        config.resolve(config.offices.path),
        code_field=config.offices.code_field,
        name_field=config.offices.name_field,
        crs=grid.rio_crs,
    )
    permits = None
    if config.permits is not None:
        permits = read_permits(
            config.resolve(config.permits.path),
            id_field=config.permits.id_field,
            crs=grid.rio_crs,
        )
    rules = TaskRules(
        min_area_m2=config.detect.min_area_m2,
        permit_overlap=config.tasks.permit_overlap,
        key_case_area_m2=config.tasks.key_case_area_m2,
        key_case_repeats=config.tasks.key_case_repeats,
        cloud_overlap=config.tasks.cloud_overlap,
        water_share=config.tasks.water_share,
        deadline_days=config.tasks.deadline_days,
    )
    register_path = config.resolve(config.paths.register_path)
    issued_at = issued_at or datetime.now(UTC)
    taskset = build_tasks(
        change_set.suspects,
        offices,
        quarter=config.quarter,
        permits=permits,
        rules=rules,
        earlier=earlier_tasks(
            read_register(register_path, missing_ok=True), quarter=config.quarter
        ),
        clouds=change_set.clouds,
        issued_at=issued_at,
    )
    taskset = record_quarter(
        register_path,
        taskset,
        quarter=config.quarter,
        before=run_cfg.before,
        after=run_cfg.after,
        offices=offices,
        run_at=issued_at,
    )
    out_dir = quarter_dir(config)
    chips = write_chips(
        taskset.tasks,
        grid=grid,
        work=config.work_dir,
        before=run_cfg.before,
        after=run_cfg.after,
        out_dir=out_dir / "worklists",
        executor=executor,
    )
    summary = write_quarter(
        out_dir,
        quarter=config.quarter,
        suspects=change_set.suspects,
        taskset=taskset,
        offices=offices,
        tiles=change_set.tiles,
        clouds=change_set.clouds,
        lang=lang,
        chips=chips,
        executor=executor,
    )
    return taskset, summary


def run(
    config: Config, *, executor: Executor | None = None, lang: str = "zh", resume: bool = False
) -> BatchReport:
    """The whole quarterly batch for ``[run].before → [run].after``.

    Ingest always keeps tiles whose inputs did not change; ``resume`` also keeps the change
    detection of tiles an interrupted run had finished.
    """
    executor = executor or Executor()
    run_cfg = config.require_run()
    executor.start()  # the workers start while the driver plans the ingest
    report = BatchReport(quarter=config.quarter, out_dir=quarter_dir(config))
    checksums = _in_background(input_checksums, config)  # while the workers ingest and detect
    with executor:
        with _timed(report, "ingest"):
            indexes = ingest_epochs(config, [run_cfg.before, run_cfg.after], executor=executor)
        for epoch_id, index in indexes.items():
            report.counts[f"tiles_{epoch_id}"] = len(index.tiles)
        with _timed(report, "changes"):
            change_set = changes(config, executor=executor, resume=resume)
        report.counts["suspects"] = len(change_set.suspects)
        with _timed(report, "worklists"):
            taskset, _ = worklists(config, lang=lang, executor=executor)
    report.counts.update(
        tasks=len(taskset.tasks),
        suppressed=len(taskset.suppressed),
        unassigned=len(taskset.unassigned),
    )
    with _timed(report, "manifest"):
        write_manifest(
            config,
            report.out_dir / "manifest.json",
            timings=report.timings,
            executor=executor,
            counts=report.counts,
            inputs=checksums.result(),
        )
    return report
