"""The task register: every task ever issued, and everything that happened to it.

The register (``[paths].register``) is a GeoPackage 1.2 with QGIS default styles::

    tasks            every task ever issued, polygons in the grid CRS: the task fields
                     (:data:`pipeline.tasks.TASK_FIELDS`), ``status``, ``last_seen`` (the latest
                     quarter whose imagery showed it) and ``demolition_observed`` (the quarter
                     whose imagery showed it demolished)
    status_history   one row per event (:data:`pipeline.vocab.EVENTS`): ``issued``,
                     ``still_present`` and ``demolition_observed`` (a quarterly batch), ``returned``
                     (results imported from an office), with who, when and from which file
    offices          the street offices of the latest batch
    quarters         each quarter's epochs, first issue and latest run

Every change goes through :func:`update`: it takes a lock file beside the register, reads it,
applies the change and writes a new file that is renamed onto the old one. Readers therefore see
the register before or after a change, never half of one, and two tubans never write at once.

Re-running a quarter (:func:`record_quarter`) replaces that quarter's tasks. A task issued again
(the same suspect, in the same office, at the same place) keeps its ID, issue time, deadline and
everything the office filled in, even when results returned in between changed which suspects
are issued; a task issued for the first time is numbered on after the office's highest number,
so an ID never changes its meaning. A task that does not come again is dropped, unless its
office already filled something in. Events are recorded once. Re-running a quarter with the same
inputs gives the same IDs.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from errors import InputError, TubanError

from .export import write_gpkg
from .tasks import TASK_FIELDS, TaskSet
from .vocab import FILL_IN_FIELDS

__all__ = [
    "HISTORY_FIELDS",
    "QUARTER_FIELDS",
    "REGISTER_FIELDS",
    "Register",
    "apply_results",
    "earlier_tasks",
    "read_register",
    "record_quarter",
    "update",
]

REGISTER_FIELDS: tuple[str, ...] = (*TASK_FIELDS, "last_seen", "demolition_observed")
"""Columns of the register's ``tasks`` layer (besides its geometry), in order."""

HISTORY_FIELDS: tuple[str, ...] = (
    "task_id",
    "quarter",
    "event",
    "suspect_id",
    *FILL_IN_FIELDS,
    "recorded_at",
    "recorded_by",
    "source",
    "row",
)
"""Columns of ``status_history``: the task, the quarter of a batch event (missing for returned
results), the event, the suspect seen (batch events), the values returned (``returned``), when
(UTC), who, and the file (and its row) the event came from."""

QUARTER_FIELDS: tuple[str, ...] = ("quarter", "before", "after", "first_issued_at", "last_run_at")
"""Columns of ``quarters``: one row per quarter recorded."""

_BATCH_EVENTS = ("issued", "still_present", "demolition_observed")
_EVENT_KEY = ["task_id", "quarter", "event", "suspect_id"]
_FLOATS = {"area_m2", "height_gain_m", "score", "x", "y", "lon", "lat"}
_TIMES = {
    "issued_at",
    "due_at",
    "verified_at",
    "closed_at",
    "recorded_at",
    "first_issued_at",
    "last_run_at",
}
_DESCRIPTIONS = {
    "tasks": "任务台账：历次下发的全部任务及其状态 (every task ever issued, with its status)",
    "offices": "街道办辖区 (street office areas)",
    "status_history": "任务状态记录 (status history: issued, still present, results returned)",
    "quarters": "已下发季度 (quarters recorded)",
}


@dataclass(frozen=True, eq=False)
class Register:
    """The register's tables in memory.

    Attributes
    ----------
    tasks : geopandas.GeoDataFrame
        Columns :data:`REGISTER_FIELDS`, polygons (the CRS of the first quarter recorded).
    history : pandas.DataFrame
        Columns :data:`HISTORY_FIELDS`, oldest event first.
    offices : geopandas.GeoDataFrame
        ``office_code``, ``office_name`` and polygons.
    quarters : pandas.DataFrame
        Columns :data:`QUARTER_FIELDS`, in the order the quarters were first issued.
    """

    tasks: gpd.GeoDataFrame
    history: pd.DataFrame
    offices: gpd.GeoDataFrame
    quarters: pd.DataFrame


def read_register(path: str | os.PathLike, *, missing_ok: bool = False) -> Register:
    """Read the register at ``path``; an empty one if it does not exist and ``missing_ok``.

    Raises
    ------
    errors.InputError
        The file does not exist (and not ``missing_ok``), or is not a register tuban wrote.
    """
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return _empty()
        raise InputError(
            f"register {path} does not exist; give the [paths] register of a quarter that ran "
            "`tuban worklists`"
        )
    try:
        layers = dict(pyogrio.list_layers(path))
    except pyogrio.errors.DataSourceError:
        raise InputError(f"{path} is not a GeoPackage; give a register tuban wrote") from None
    missing = [
        name for name in ("tasks", "status_history", "offices", "quarters") if name not in layers
    ]
    if missing:
        raise InputError(
            f"{path} is not a tuban register (no layer {', '.join(missing)}; layers: "
            f"{', '.join(layers) or 'none'}); give a register tuban wrote, or a new file name"
        )
    tasks = pyogrio.read_dataframe(path, layer="tasks")
    offices = pyogrio.read_dataframe(path, layer="offices")
    return Register(
        tasks=gpd.GeoDataFrame(
            _typed(tasks, REGISTER_FIELDS), geometry=tasks.geometry.to_numpy(), crs=tasks.crs
        ),
        history=_typed(pyogrio.read_dataframe(path, layer="status_history"), HISTORY_FIELDS),
        offices=gpd.GeoDataFrame(
            _typed(offices, ("office_code", "office_name")),
            geometry=offices.geometry.to_numpy(),
            crs=offices.crs,
        ),
        quarters=_typed(pyogrio.read_dataframe(path, layer="quarters"), QUARTER_FIELDS),
    )


def earlier_tasks(register: Register, *, quarter: str) -> gpd.GeoDataFrame:
    """The tasks of every quarter first issued before ``quarter`` (all tasks for a new quarter)."""
    order = list(register.quarters["quarter"])
    earlier = order[: order.index(quarter)] if quarter in order else order
    return register.tasks[register.tasks["quarter"].isin(earlier)].reset_index(drop=True)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold ``<register>.lock`` (created exclusively) for the duration of the block."""
    lock = path.with_name(path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = lock.read_text(encoding="utf-8", errors="replace").strip() or "unknown"
        raise TubanError(
            f"{path} is being updated by another tuban ({holder}); wait for it to finish, or "
            f"delete {lock} if no tuban is running"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now().isoformat()}")
        yield
    finally:
        lock.unlink(missing_ok=True)


def update(path: str | os.PathLike, change: Callable[[Register], Register]) -> Register:
    """Apply ``change`` to the register at ``path`` as one atomic step, and return the result.

    ``change`` gets the register as it is (empty if the file does not exist yet) and returns
    the new one; if it raises, the file is left as it was. ``status``, ``last_seen`` and
    ``demolition_observed`` are derived from the fill-ins and the history before writing.
    """
    path = Path(path)
    with _lock(path):
        register = _derived(change(read_register(path, missing_ok=True)))
        write_gpkg(
            path,
            {"tasks": register.tasks, "offices": register.offices},
            tables={"status_history": register.history, "quarters": register.quarters},
            descriptions=_DESCRIPTIONS,
        )
    return register


def record_quarter(
    path: str | os.PathLike,
    taskset: TaskSet,
    *,
    quarter: str,
    before: str,
    after: str,
    offices: gpd.GeoDataFrame,
    run_at: datetime,
    by: str | None = None,
) -> TaskSet:
    """Record a quarter's tasks and the earlier tasks its suspects showed again.

    Parameters
    ----------
    path : str or os.PathLike
        The register; created if it does not exist.
    taskset : pipeline.tasks.TaskSet
        The quarter's tasks, as from :func:`pipeline.tasks.build_tasks` with ``earlier`` from
        :func:`earlier_tasks`. Suppressed suspects with reason ``persisting`` and
        ``demolition_observed`` are recorded as ``still_present`` and ``demolition_observed``
        events of their ``prior_task_id``.
    quarter, before, after : str
        The quarter's ID and its before and after epochs.
    offices : geopandas.GeoDataFrame
        The street offices, as from :func:`pipeline.vectors.read_offices`.
    run_at : datetime.datetime
        Time zone aware time of the batch, recorded with its events.
    by : str, optional
        Who ran the batch (default: the user name of the process).

    Returns
    -------
    pipeline.tasks.TaskSet
        ``taskset`` with its tasks as the register holds them: re-issued IDs keep their first
        ``issued_at``, ``due_at``, the office's fill-ins and ``status``.
    """
    run_at = pd.Timestamp(run_at).tz_convert("UTC")
    stamp = {"recorded_by": by or _user(), "source": f"batch {before}->{after}"}
    issued: list[str] = []

    def change(register: Register) -> Register:
        crs = register.tasks.crs if len(register.tasks) else taskset.tasks.crs
        new = _reissued(taskset.tasks.to_crs(crs), register.tasks, quarter=quarter)
        issued.extend(new["task_id"])
        old = register.tasks[register.tasks["quarter"] == quarter]
        dropped = old[~old["task_id"].isin(new["task_id"])]
        worked = dropped[dropped[list(FILL_IN_FIELDS)].notna().any(axis=1)]
        tasks = pd.concat(
            [register.tasks[register.tasks["quarter"] != quarter], new, worked], ignore_index=True
        )
        events = _batch_events(new, taskset.suppressed, quarter=quarter, run_at=run_at, **stamp)
        history = _merge_events(register.history, events, quarter=quarter, keep=worked["task_id"])
        return Register(
            tasks=gpd.GeoDataFrame(tasks, geometry="geometry", crs=crs),
            history=history,
            offices=_merge_offices(register.offices, offices.to_crs(crs)),
            quarters=_merge_quarter(register.quarters, quarter, before, after, run_at),
        )

    register = update(path, change)
    mine = register.tasks.set_index("task_id").loc[issued].reset_index()
    tasks = gpd.GeoDataFrame(
        mine[list(TASK_FIELDS)], geometry=mine.geometry.to_numpy(), crs=register.tasks.crs
    ).to_crs(taskset.tasks.crs)
    return replace(taskset, tasks=tasks)


def apply_results(
    register: Register, results: pd.DataFrame, *, at: datetime, by: str | None = None
) -> Register:
    """``register`` with the values offices returned, and a ``returned`` event per changed task.

    Parameters
    ----------
    register : Register
        The register as it is.
    results : pandas.DataFrame
        One row per task: ``task_id`` (registered), the fill-in fields typed as in the register
        (missing: keep the registered value), ``source`` (the file) and ``row`` (its row).
    at : datetime.datetime
        Time zone aware time of the import.
    by : str, optional
        Who imports (default: the user name of the process).

    Returns
    -------
    Register
        Tasks whose returned values equal the registered ones are left alone, without event.
    """
    fields = list(FILL_IN_FIELDS)
    tasks = register.tasks.set_index("task_id")
    new = results.set_index("task_id")
    old = tasks.loc[new.index, fields]
    differs = (new[fields].notna() & (new[fields].astype(object) != old.astype(object))).any(axis=1)
    changed = new[differs]
    for field in fields:
        tasks.loc[changed.index, field] = changed[field].combine_first(
            old.loc[changed.index, field]
        )
    events = changed.reset_index().assign(
        event="returned", recorded_at=pd.Timestamp(at).tz_convert("UTC"), recorded_by=by or _user()
    )
    history = pd.concat([register.history, _typed(events, HISTORY_FIELDS)], ignore_index=True)
    updated = gpd.GeoDataFrame(
        tasks.reset_index()[register.tasks.columns], geometry="geometry", crs=register.tasks.crs
    )
    return replace(register, tasks=updated, history=history)


# --- recording a quarter ---------------------------------------------------------------------


def _reissued(
    new: gpd.GeoDataFrame, registered: gpd.GeoDataFrame, *, quarter: str
) -> gpd.GeoDataFrame:
    """``new`` tasks of a quarter already recorded, with the IDs it was issued under.

    A new task that is a registered task of the quarter again (same suspect, same office,
    overlapping polygons) takes its ID, issue time, deadline and fill-ins; the other new tasks
    are numbered on after the highest number each office had, in their priority order.
    """
    carry = ["task_id", "issued_at", "due_at", *FILL_IN_FIELDS]
    old = registered[registered["quarter"] == quarter]
    new = new.reset_index(drop=True)
    known = new[["suspect_id", "office_code"]].merge(
        pd.DataFrame(old[["suspect_id", "office_code", *carry]]).assign(_old=old.geometry.values),
        on=["suspect_id", "office_code"],
        how="left",
    )
    same = known["task_id"].notna() & shapely.intersects(
        new.geometry.to_numpy(), known["_old"].to_numpy()
    )
    for field in carry[1:]:
        new[field] = known[field].where(same).combine_first(new[field]).astype(new[field].dtype)
    last = old["task_id"].str.rsplit("-", n=1).str[1].astype(int).groupby(old["office_code"]).max()
    fresh = new[~same]
    number = fresh.groupby("office_code").cumcount() + 1 + fresh["office_code"].map(last).fillna(0)
    new["task_id"] = (
        known["task_id"]
        .where(same)
        .combine_first(
            quarter + "-" + fresh["office_code"] + "-" + number.astype(int).astype(str).str.zfill(4)
        )
    )
    return new.sort_values(["office_code", "task_id"], ignore_index=True)


def _batch_events(
    tasks: pd.DataFrame,
    suppressed: pd.DataFrame,
    *,
    quarter: str,
    run_at: pd.Timestamp,
    recorded_by: str,
    source: str,
) -> pd.DataFrame:
    """A batch's events: ``issued`` per task, ``still_present`` / ``demolition_observed`` per
    suppressed suspect linked to an earlier task."""
    kind = suppressed["reason"].astype("str").str.split(":", n=1).str[0]
    event = kind.map({"persisting": "still_present", "demolition_observed": "demolition_observed"})
    seen = suppressed[event.notna()]
    events = pd.DataFrame(
        {
            "task_id": np.r_[
                tasks["task_id"].to_numpy(object), seen["prior_task_id"].to_numpy(object)
            ],
            "event": np.r_[
                np.full(len(tasks), "issued", dtype=object), event.dropna().to_numpy(object)
            ],
            "suspect_id": np.r_[
                tasks["suspect_id"].to_numpy(object), seen["suspect_id"].to_numpy(object)
            ],
            "recorded_at": np.r_[
                tasks["issued_at"].to_numpy(), np.full(len(seen), run_at.to_datetime64())
            ],
        }
    ).assign(quarter=quarter, recorded_by=recorded_by, source=source)
    return _typed(events.drop_duplicates(_EVENT_KEY), HISTORY_FIELDS)


def _merge_events(
    history: pd.DataFrame, events: pd.DataFrame, *, quarter: str, keep: pd.Series
) -> pd.DataFrame:
    """Replace ``quarter``'s batch events by ``events``; events already recorded keep their row
    (and time), and the ``issued`` events of the tasks in ``keep`` stay."""
    batch = (history["quarter"] == quarter) & history["event"].isin(_BATCH_EVENTS)
    kept = history["task_id"].isin(keep) & (history["event"] == "issued")
    stays = ~batch | kept | _keys(history).isin(_keys(events))
    added = events[~_keys(events).isin(_keys(history[batch]))]
    out = pd.concat([history[stays], added], ignore_index=True)
    return out.sort_values("recorded_at", kind="stable", ignore_index=True)


def _keys(events: pd.DataFrame) -> pd.Index:
    return pd.MultiIndex.from_frame(events[_EVENT_KEY].astype("str"))


def _merge_offices(registered: gpd.GeoDataFrame, offices: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The registered offices, those with a code in ``offices`` replaced by the new ones."""
    others = registered[~registered["office_code"].isin(offices["office_code"])]
    merged = pd.concat(
        [others, offices[["office_code", "office_name", "geometry"]]], ignore_index=True
    )
    return gpd.GeoDataFrame(merged, geometry="geometry", crs=offices.crs)


def _merge_quarter(
    quarters: pd.DataFrame, quarter: str, before: str, after: str, run_at: pd.Timestamp
) -> pd.DataFrame:
    """``quarters`` with ``quarter`` added at the end, or its epochs and latest run updated."""
    row = pd.DataFrame(
        {
            "quarter": [quarter],
            "before": before,
            "after": after,
            "first_issued_at": run_at,
            "last_run_at": run_at,
        }
    )
    if quarter in set(quarters["quarter"]):
        known = quarters["quarter"] == quarter
        row["first_issued_at"] = quarters.loc[known, "first_issued_at"].to_numpy()
        return _typed(
            pd.concat([quarters[~known], row])
            .set_index("quarter")
            .reindex(quarters["quarter"])
            .reset_index(),
            QUARTER_FIELDS,
        )
    return _typed(pd.concat([quarters, row], ignore_index=True), QUARTER_FIELDS)


# --- derived fields, typing ------------------------------------------------------------------


def _derived(register: Register) -> Register:
    """``register`` with ``status``, ``last_seen`` and ``demolition_observed`` recomputed."""
    tasks = register.tasks.copy()
    history = _typed(register.history, HISTORY_FIELDS)
    tasks["status"] = np.select(
        [tasks["closed_at"].notna(), tasks["result"].notna()], ["closed", "verified"], "issued"
    )
    order = history["quarter"].map({q: n for n, q in enumerate(register.quarters["quarter"])})
    for field, events in (
        ("last_seen", ("issued", "still_present")),
        ("demolition_observed", ("demolition_observed",)),
    ):
        seen = history[history["event"].isin(events) & order.notna()]
        latest = (
            seen.assign(_order=order).sort_values("_order").groupby("task_id")["quarter"].last()
        )
        tasks[field] = tasks["task_id"].map(latest)
    typed = _typed(tasks, REGISTER_FIELDS)
    return replace(
        register,
        tasks=gpd.GeoDataFrame(typed, geometry=tasks.geometry.to_numpy(), crs=tasks.crs),
        history=history,
    )


def _typed(frame: pd.DataFrame, fields: tuple[str, ...]) -> pd.DataFrame:
    """``frame``'s ``fields`` (missing ones empty), in order, as the register types them."""
    out = pd.DataFrame(index=frame.index)
    for field in fields:
        column = (
            frame[field] if field in frame else pd.Series(None, index=frame.index, dtype=object)
        )
        if field in _TIMES:
            out[field] = pd.to_datetime(column, utc=True).astype("datetime64[ms, UTC]")
        elif field in _FLOATS:
            out[field] = column.astype("float64")
        elif field == "priority":
            out[field] = column.astype("int64")
        elif field == "key_case":
            out[field] = column.astype("bool")
        elif field == "row":
            out[field] = column.astype("Int64")
        else:
            out[field] = column.astype("str")
    return out


def _empty() -> Register:
    nothing = pd.DataFrame()
    return Register(
        tasks=gpd.GeoDataFrame(_typed(nothing, REGISTER_FIELDS), geometry=[]),
        history=_typed(nothing, HISTORY_FIELDS),
        offices=gpd.GeoDataFrame(_typed(nothing, ("office_code", "office_name")), geometry=[]),
        quarters=_typed(nothing, QUARTER_FIELDS),
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
