"""Import the worklists street offices send back: check everything, then apply all or nothing.

Returned files may be ``.xlsx`` (the sheet tuban wrote, or the first one), ``.csv`` (UTF-8 with
or without BOM, or GB18030 as Excel saves CSV on Chinese Windows) or ``.gpkg`` (layer
``tasks``). Headers may be Chinese or English (:data:`pipeline.vocab.HEADER_FIELDS`), values too
(:func:`pipeline.vocab.accepted`). Only ``task_id`` (and ``office_code``, see below) and the
fill-in columns (:data:`pipeline.vocab.FILL_IN_FIELDS`) are read; other columns are ignored.

Every row is checked before anything is applied; the problems, each with its file and row, are:

* no ``task_id`` column, or a file that cannot be read;
* an unknown task ID;
* a task of another office than the file's. A file's office is the office code its name starts
  with (``<office_code>_<quarter>.xlsx``, as tuban names worklists), else the one value of its
  ``office_code`` column;
* a ``result`` or ``disposal`` outside the vocabulary;
* a bad date: not a date, before the task was issued, or after today;
* closed before verified: a ``closed_at`` while the task has no ``result`` or ``verified_at``
  (returned or already in the register), or a ``closed_at`` earlier than its ``verified_at``;
* the same task twice (in one file or several) with different values.

A blank cell leaves the register's value as it is; a value that differs from the register's
replaces it. When there is no problem, every change is applied in one update of the register
(:func:`pipeline.register.update`) and recorded in ``status_history`` as a ``returned`` event
with the values, who imported them, when, and the file and row they came from. Importing the
same file again changes nothing. Dates are calendar dates, stored at 00:00 UTC. A leading ``'``
that tuban put before text starting with ``= + - @`` is taken off again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from io import StringIO
from pathlib import Path
from zipfile import BadZipFile

import numpy as np
import openpyxl
import pandas as pd
import pyogrio
from openpyxl.utils.datetime import from_excel
from openpyxl.utils.exceptions import InvalidFileException

from errors import InputError

from .register import Register, apply_results, update
from .vocab import (
    DATE_FIELDS,
    DISPOSALS,
    FILL_IN_FIELDS,
    HEADER_FIELDS,
    RESULTS,
    WORDS,
    accepted,
    header,
)

__all__ = ["ImportReport", "ResultsError", "import_results"]

_VOCABULARIES = {"result": RESULTS, "disposal": DISPOSALS}
_DATE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[ T].*)?")
_NEUTRALISED = re.compile(r"'(?=[=+\-@\t\r])")


class ResultsError(InputError):
    """Returned worklists with problems; ``problems`` lists each with its file and row."""

    def __init__(self, problems: list[str], files: int):
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s) in the {files} returned file(s); nothing was applied; "
            "fix them and import again"
        )


@dataclass(frozen=True)
class ImportReport:
    """What an import did.

    Attributes
    ----------
    files, rows : int
        Files read and rows in them with anything filled in.
    updated : tuple of str
        IDs of the tasks whose values changed (one ``returned`` event each).
    unchanged : int
        Tasks returned with nothing new.
    """

    files: int
    rows: int
    updated: tuple[str, ...]
    unchanged: int


def import_results(
    paths: list[str | os.PathLike],
    *,
    register: str | os.PathLike,
    by: str | None = None,
    today: date | None = None,
) -> ImportReport:
    """Check returned worklists against the register and apply them (see module docs).

    Parameters
    ----------
    paths : list of str or os.PathLike
        Returned ``.xlsx``, ``.csv`` or ``.gpkg`` worklists.
    register : str or os.PathLike
        The task register (``[paths].register``).
    by : str, optional
        Who imports, recorded with each event (default: the user name of the process).
    today : datetime.date, optional
        The latest date allowed (default: today, UTC).

    Returns
    -------
    ImportReport

    Raises
    ------
    ResultsError
        Any problem in any file; ``problems`` lists them all and nothing is applied.
    errors.InputError
        The register does not exist or is not a register.
    """
    if not paths:
        raise InputError("no returned worklist given; pass one or more .xlsx, .csv or .gpkg files")
    if not Path(register).exists():
        raise InputError(
            f"register {register} does not exist; give the [paths] register of the quarter"
        )
    problems = _Problems([str(p) for p in paths])
    rows = pd.concat([_read(Path(p), problems) for p in paths], ignore_index=True).astype(object)
    rows = rows.where(rows.notna(), None)
    rows = rows[rows[list(FILL_IN_FIELDS)].notna().any(axis=1)].reset_index(drop=True)
    today = today or datetime.now(UTC).date()
    seen: dict[str, int] = {}

    def change(current: Register) -> Register:
        returned = _checked(rows, current, problems, today=today)
        if problems.found:
            raise ResultsError(problems.lines(), len(paths))
        seen.update(events=len(current.history), returned=len(returned))
        return apply_results(current, returned, at=datetime.now(UTC), by=by)

    events = update(register, change).history.iloc[seen["events"] :]
    return ImportReport(
        files=len(paths),
        rows=len(rows),
        updated=tuple(events["task_id"]),
        unchanged=seen["returned"] - len(events),
    )


# --- reading ---------------------------------------------------------------------------------


class _Problems:
    """Problems found so far; :meth:`lines` lists them by file (in the order given) and row."""

    def __init__(self, files: list[str]):
        self.order = {file: n for n, file in enumerate(files)}
        self.found: list[tuple[str, int, str]] = []

    def file(self, file: str, text: str) -> None:
        self.found.append((file, 0, f"{file}: {text}"))

    def rows(self, rows: pd.DataFrame, mask: pd.Series, text: pd.Series | str) -> None:
        """A problem for each of ``rows[mask]`` (columns ``_file``, ``_n``, ``_where``)."""
        picked = rows[mask]
        lines = (
            picked["_file"]
            + " "
            + picked["_where"]
            + ": "
            + (text[mask] if isinstance(text, pd.Series) else text)
        )
        self.found.extend(zip(picked["_file"], picked["_n"], lines, strict=True))

    def lines(self) -> list[str]:
        ordered = sorted(self.found, key=lambda p: (self.order.get(p[0], len(self.order)), p[1]))
        return [line for _, _, line in ordered]


def _read(path: Path, problems: _Problems) -> pd.DataFrame:
    """One returned file as rows of ``_file``, ``_n`` (row or feature number), ``_where``
    (e.g. "row 5"), ``task_id``, ``office_code`` and the fill-in fields (cells as read)."""
    columns = ["_file", "_n", "_where", "task_id", "office_code", *FILL_IN_FIELDS]
    suffix = path.suffix.lower()
    try:
        if suffix == ".xlsx":
            cells, where = _read_xlsx(path)
        elif suffix == ".csv":
            cells, where = _read_csv(path)
        elif suffix == ".gpkg":
            cells, where = _read_gpkg(path)
        else:
            problems.file(str(path), "not a .xlsx, .csv or .gpkg file; return the worklist as is")
            return pd.DataFrame(columns=columns)
    except FileNotFoundError:
        problems.file(str(path), "file not found; check the path")
        return pd.DataFrame(columns=columns)
    except (
        OSError,
        ValueError,
        KeyError,
        BadZipFile,
        InvalidFileException,
        pyogrio.errors.DataSourceError,
    ) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.file(str(path), f"cannot be read ({reason}); save it again as {suffix}")
        return pd.DataFrame(columns=columns)
    fields = {str(c).strip(): HEADER_FIELDS.get(str(c).strip()) for c in cells.columns}
    if "task_id" not in fields.values():
        shown = ", ".join(str(c) for c in cells.columns) or "none"
        problems.file(
            str(path),
            f"no {header('task_id', lang='zh')} / task_id column (headers: {shown}); keep the "
            "header row of the worklist",
        )
        return pd.DataFrame(columns=columns)
    cells = cells.set_axis(list(fields.values()), axis=1)
    cells = cells.loc[:, [f in columns for f in cells.columns]]
    cells = cells.loc[:, ~cells.columns.duplicated()]
    unit, numbers = where
    return cells.reindex(columns=columns[3:]).assign(
        _file=str(path), _n=numbers, _where=[f"{unit} {n}" for n in numbers]
    )[columns]


def _read_xlsx(path: Path) -> tuple[pd.DataFrame, tuple[str, list[int]]]:
    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        titles = [WORDS["tasks"], "tasks"]
        sheet = next(
            (workbook[t] for t in titles if t in workbook.sheetnames), workbook.worksheets[0]
        )
        values = list(sheet.iter_rows(values_only=True))
    finally:
        workbook.close()
    if not values:
        return pd.DataFrame(), ("row", [])
    width = len(values[0])
    frame = pd.DataFrame(
        [list(r)[:width] + [None] * (width - len(r)) for r in values[1:]],
        columns=[c if c is not None else "" for c in values[0]],
        dtype=object,
    )
    return _nonblank(frame, "row", first=2)


def _read_csv(path: Path) -> tuple[pd.DataFrame, tuple[str, list[int]]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030")
    frame = pd.read_csv(StringIO(text), dtype=object, keep_default_na=False)
    return _nonblank(frame, "row", first=2)


def _read_gpkg(path: Path) -> tuple[pd.DataFrame, tuple[str, list[int]]]:
    frame = pyogrio.read_dataframe(path, layer="tasks", read_geometry=False)
    return _nonblank(pd.DataFrame(frame, dtype=object), "feature", first=1)


def _nonblank(
    frame: pd.DataFrame, unit: str, *, first: int
) -> tuple[pd.DataFrame, tuple[str, list[int]]]:
    """``frame`` without rows whose every cell is empty, cells as text or dates (None if
    empty), and the ``unit`` ("row", "feature") and number of each row kept (the first is
    ``first``)."""
    frame = frame.map(_cell)
    keep = frame.notna().any(axis=1).to_numpy()
    numbers = np.arange(first, first + len(frame))[keep].tolist()
    return frame[keep].reset_index(drop=True), (unit, numbers)


def _cell(value: object) -> object:
    """A cell as stripped text (None if empty), a date or a number, as read."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, str):
        text = _NEUTRALISED.sub("", value.strip(), count=1)
        return text or None
    return value


# --- checking ----------------------------------------------------------------------------------


def _checked(
    rows: pd.DataFrame, register: Register, problems: _Problems, *, today: date
) -> pd.DataFrame:
    """One row per returned task: ``task_id``, the fill-ins typed as in the register, ``source``
    (the file) and ``row``; every problem found is added to ``problems``."""
    tasks = register.tasks.set_index("task_id")
    task_id = rows["task_id"].map(lambda v: None if v is None else str(v)).astype("str")
    values = rows[["_file", "_n", "_where"]].assign(task_id=task_id)

    problems.rows(
        rows,
        task_id.isna(),
        f"no {header('task_id', lang='zh')} (task_id); fill it in or delete the row",
    )
    known = task_id.isin(tasks.index)
    problems.rows(
        rows,
        task_id.notna() & ~known,
        "unknown task " + task_id + "; check the ID against the worklist",
    )
    office = _file_offices(rows, register, problems)
    owner = task_id.map(tasks["office_code"])
    elsewhere = known & office.notna() & (owner != office)
    problems.rows(
        rows,
        elsewhere,
        "task "
        + task_id
        + " belongs to office "
        + owner
        + ", not "
        + office
        + "; return it in that office's worklist",
    )

    for field, vocabulary in _VOCABULARIES.items():
        text = rows[field].map(lambda v: None if v is None else str(v).lower())
        values[field] = text.map(accepted(vocabulary)).astype("str")
        allowed = ", ".join([*vocabulary.values(), *vocabulary])
        problems.rows(
            rows,
            text.notna() & values[field].isna(),
            f"{_named(field)} "
            + rows[field].map(_quoted).astype("str")
            + f" is not allowed; use one of {allowed}",
        )
    issued = task_id.map(tasks["issued_at"]).dt.normalize()
    for field in DATE_FIELDS:
        day = pd.to_datetime(rows[field].map(_date), utc=True).astype("datetime64[ms, UTC]")
        values[field] = day
        problems.rows(
            rows,
            rows[field].notna() & day.isna(),
            f"{_named(field)} "
            + rows[field].map(_quoted).astype("str")
            + " is not a date; write e.g. 2024-05-20",
        )
        problems.rows(
            rows,
            day < issued,
            f"{_named(field)} "
            + day.dt.strftime("%Y-%m-%d")
            + " is before the task was issued ("
            + issued.dt.strftime("%Y-%m-%d")
            + ")",
        )
        problems.rows(
            rows,
            day > pd.Timestamp(today, tz="UTC"),
            f"{_named(field)} " + day.dt.strftime("%Y-%m-%d") + " is in the future",
        )
    for field in ("inspector", "note"):
        values[field] = rows[field].map(lambda v: None if v is None else str(v)).astype("str")

    merged = _one_per_task(values[known & ~elsewhere], problems)
    _check_order(merged, tasks, problems)
    return merged.rename(columns={"_file": "source", "_n": "row"}).drop(columns="_where")


def _named(field: str) -> str:
    """A field as named in problems: its Chinese header and its name, e.g. 核查结果 (result)."""
    return f"{header(field, lang='zh')} ({field})"


def _file_offices(rows: pd.DataFrame, register: Register, problems: _Problems) -> pd.Series:
    """Each row's file's office (see module docs); missing where it cannot be told."""
    codes = sorted(
        set(register.offices["office_code"]) | set(register.tasks["office_code"]),
        key=len,
        reverse=True,
    )
    office: dict[str, str | None] = {}
    for file, group in rows.groupby("_file", sort=False):
        stem = Path(file).stem
        named = next((c for c in codes if stem == c or stem.startswith(f"{c}_")), None)
        column = set(group["office_code"].dropna().astype(str))
        office[file] = named or (column.pop() if len(column) == 1 else None)
        if office[file] is None:
            problems.file(
                file,
                "cannot tell which office returned it; keep the name "
                f"<office_code>_<quarter>{Path(file).suffix} or the "
                f"{header('office_code', lang='zh')} column",
            )
    return rows["_file"].map(office).astype("str")


def _one_per_task(values: pd.DataFrame, problems: _Problems) -> pd.DataFrame:
    """Collapse rows of the same task; a field given two different values is a problem."""
    for field in FILL_IN_FIELDS:
        given = values[values[field].notna()]
        first = given.groupby("task_id")[[field, "_file", "_where"]].transform("first")
        problems.rows(
            given,
            given[field] != first[field],
            "task "
            + given["task_id"]
            + f" has {_named(field)} "
            + given[field].map(_quoted).astype("str")
            + " but "
            + first["_file"]
            + " "
            + first["_where"]
            + " has "
            + first[field].map(_quoted).astype("str")
            + "; keep one value",
        )
    # each task's place is its first row, or its first row with a closed_at (see _check_order)
    closing_first = values.sort_values("closed_at", na_position="last", kind="stable")
    place = closing_first.groupby("task_id").nth(0).set_index("task_id")[["_file", "_n", "_where"]]
    merged = values.groupby("task_id", sort=False).first()  # the first value of each field
    return merged.drop(columns=place.columns).join(place).reset_index()


def _check_order(merged: pd.DataFrame, tasks: pd.DataFrame, problems: _Problems) -> None:
    """Closed before verified, with the register's values where the file leaves a blank."""
    now = merged.copy()
    for field in ("result", "verified_at", "closed_at"):
        now[field] = now[field].combine_first(now["task_id"].map(tasks[field]))
    verify_first = "; a task is verified before it is closed"
    no_result, no_date = now["result"].isna(), now["verified_at"].isna()
    lacking = np.select(
        [no_result & no_date, no_result],
        [f"{_named('result')} and no {_named('verified_at')}", _named("result")],
        _named("verified_at"),
    )
    problems.rows(
        now,
        now["closed_at"].notna() & (no_result | no_date),
        "task " + now["task_id"] + f" has a {_named('closed_at')} but no " + lacking + verify_first,
    )
    problems.rows(
        now,
        now["closed_at"] < now["verified_at"],
        "task " + now["task_id"] + f" has a {_named('closed_at')} before its "
        f"{_named('verified_at')}" + verify_first,
    )


def _quoted(value: object) -> str:
    """``value`` as quoted in a problem: text in quotes, dates as YYYY-MM-DD."""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    return repr(str(value))


def _date(value: object) -> pd.Timestamp | None:
    """A cell as a calendar date (datetime, date, Excel serial number or text like 2024-05-20,
    2024/5/20, 2024年5月20日), or None."""
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return pd.Timestamp(value.year, value.month, value.day)
    if isinstance(value, int | float) and not isinstance(value, bool):
        day = from_excel(value)
        return pd.Timestamp(day.year, day.month, day.day) if day is not None else None
    match = _DATE.fullmatch(str(value).strip())
    if match is None:
        return None
    try:
        return pd.Timestamp(*(int(g) for g in match.groups()))
    except ValueError:
        return None
