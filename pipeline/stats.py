"""How each street office is doing, from the register: 核查率, 办结率, overdue tasks, key cases.

Per office, over the tasks issued in one quarter (or in all quarters):

* ``issued``: tasks issued; ``verified``: tasks with a ``result``; ``closed``: tasks with a
  ``closed_at``;
* ``verify_rate`` (核查率) = verified / issued, ``close_rate`` (办结率) = closed / issued
  (missing for an office with no task);
* ``overdue``: tasks not closed whose ``due_at`` (issue + ``[tasks] deadline_days``) has passed;
* ``open_key_cases``: key cases (重点督办) not closed;
* ``rank``: 1 for the best; offices are ordered by ``close_rate``, then ``verify_rate`` (both
  highest first), then ``overdue`` (fewest first); equal offices share a rank, offices without
  tasks have none.

:func:`office_stats` computes the table; :func:`write_stats` writes it as CSV (UTF-8 with BOM),
XLSX and a PNG bar chart of both rates (with Chinese labels when a CJK font is installed, English
otherwise); :func:`stats` does both for the CLI.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.figure import Figure
from openpyxl import Workbook
from openpyxl.styles import Font

from errors import InputError

from .atomic import atomic_path
from .register import Register, read_register
from .vocab import STATS_HEADERS, WORDS, Lang, label

__all__ = ["STATS_FIELDS", "StatsReport", "format_table", "office_stats", "stats", "write_stats"]

STATS_FIELDS: tuple[str, ...] = tuple(STATS_HEADERS)
"""Columns of the statistics table, in order."""

_RANK_BY = ["close_rate", "verify_rate", "overdue"]
_CJK_FONTS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Heiti SC",
    "Noto Sans SC",
)
_RATES = ("verify_rate", "close_rate")


@dataclass(frozen=True)
class StatsReport:
    """The statistics table (:data:`STATS_FIELDS`, a last ``total`` row) and the files written."""

    table: pd.DataFrame
    files: tuple[Path, ...]


def office_stats(
    register: Register, *, quarter: str | None = None, as_of: datetime | None = None
) -> pd.DataFrame:
    """Per office counts and rates of the tasks issued in ``quarter`` (or all quarters).

    Parameters
    ----------
    register : pipeline.register.Register
        The register, as from :func:`pipeline.register.read_register`.
    quarter : str, optional
        Only the tasks issued in this quarter.
    as_of : datetime.datetime, optional
        Time zone aware time against which deadlines are checked (default: now).

    Returns
    -------
    pandas.DataFrame
        One row per office of the register (in its order, ranked offices first by rank),
        columns :data:`STATS_FIELDS`; rates are fractions 0-1, ``rank`` is a nullable integer.
    """
    tasks = register.tasks
    if quarter is not None:
        known = list(register.quarters["quarter"])
        if quarter not in known:
            raise InputError(
                f"quarter {quarter!r} is not in the register (quarters: "
                f"{', '.join(known) or 'none'}); check --quarter"
            )
        tasks = tasks[tasks["quarter"] == quarter]
    as_of = pd.Timestamp(as_of or datetime.now(UTC)).tz_convert("UTC")
    is_open = tasks["closed_at"].isna()
    flags = pd.DataFrame(
        {
            "office_code": tasks["office_code"],
            "issued": 1,
            "verified": tasks["result"].notna(),
            "closed": ~is_open,
            "overdue": is_open & (tasks["due_at"] < as_of),
            "open_key_cases": is_open & tasks["key_case"],
        }
    )
    offices = pd.concat(
        [
            register.offices[["office_code", "office_name"]],
            tasks[["office_code", "office_name"]],
        ]
    ).drop_duplicates("office_code")
    counts = flags.groupby("office_code").sum().reindex(offices["office_code"]).fillna(0)
    table = offices.set_index("office_code").join(counts.astype("int64")).reset_index()
    table = _with_rates(table)
    table["rank"] = _ranks(table)
    table = table.sort_values("rank", kind="stable", na_position="last", ignore_index=True)
    return table[list(STATS_FIELDS)]


def _with_rates(table: pd.DataFrame) -> pd.DataFrame:
    issued = table["issued"].where(table["issued"] > 0)
    return table.assign(verify_rate=table["verified"] / issued, close_rate=table["closed"] / issued)


def _ranks(table: pd.DataFrame) -> pd.Series:
    """Rank 1 for the best office (module docs); equal offices share the lowest rank."""
    ranked = table[table["issued"] > 0].sort_values(
        _RANK_BY, ascending=[False, False, True], kind="stable"
    )
    position = pd.Series(np.arange(1, len(ranked) + 1), index=ranked.index)
    first = ~ranked[_RANK_BY].duplicated()
    rank = position.where(first).ffill()
    return rank.reindex(table.index).astype("Int64")


def _with_total(table: pd.DataFrame, *, lang: Lang) -> pd.DataFrame:
    """``table`` with a last row summing every office (its rates over all their tasks)."""
    counts = ["issued", "verified", "closed", "overdue", "open_key_cases"]
    total = pd.DataFrame(
        {
            "office_code": ["total"],
            "office_name": [label(WORDS, "all offices", lang=lang)],
            **{c: [int(table[c].sum())] for c in counts},
        }
    )
    both = pd.concat([table, _with_rates(total)], ignore_index=True)
    both["rank"] = both["rank"].astype("Int64")
    return both[list(STATS_FIELDS)]


def write_stats(
    table: pd.DataFrame, out_dir: str | os.PathLike, *, quarter: str | None, lang: Lang = "zh"
) -> tuple[Path, ...]:
    """Write ``table`` as ``stats_<quarter>.csv``, ``.xlsx`` and a bar chart ``.png``.

    Parameters
    ----------
    table : pandas.DataFrame
        As from :func:`office_stats` (a ``total`` row is added to the CSV and XLSX).
    out_dir : str or os.PathLike
        Folder for the files; created if missing.
    quarter : str or None
        The quarter the table covers (None: all quarters, files ``stats_all.*``).
    lang : {"zh", "en"}
        Language of headers and labels.

    Returns
    -------
    tuple of pathlib.Path
        The CSV, XLSX and PNG files.
    """
    out_dir = Path(out_dir)
    shown = _with_total(table, lang=lang)
    headers = [label(STATS_HEADERS, f, lang=lang) for f in STATS_FIELDS]
    csv, xlsx, png = (out_dir / f"stats_{quarter or 'all'}.{ext}" for ext in ("csv", "xlsx", "png"))
    with atomic_path(csv) as tmp:
        shown.round({r: 4 for r in _RATES}).set_axis(headers, axis=1).to_csv(
            tmp, index=False, encoding="utf-8-sig", lineterminator="\r\n"
        )
    _write_xlsx(xlsx, shown, headers, sheet=csv.stem[:31])
    _write_chart(png, table, quarter=quarter, lang=lang)
    return csv, xlsx, png


def _title(quarter: str | None, *, lang: Lang) -> str:
    scope = quarter or label(WORDS, "all quarters", lang=lang)
    if lang == "zh":
        return f"{scope} {WORDS['rates']}"
    return f"{scope}: verified and closed / issued"


def _write_xlsx(path: Path, table: pd.DataFrame, headers: list[str], *, sheet: str) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ws.append(headers)
    for row in table.astype(object).where(table.notna(), None).itertuples(index=False, name=None):
        ws.append(row)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for field in _RATES:
        col = STATS_FIELDS.index(field) + 1
        for (cell,) in ws.iter_rows(min_row=2, min_col=col, max_col=col):
            cell.number_format = "0.0%"
    for row in ws.iter_rows(min_row=ws.max_row, max_row=ws.max_row):
        for cell in row:
            cell.font = Font(bold=True)
    for col, text in enumerate(headers, start=1):
        ws.column_dimensions[ws.cell(row=1, column=col).column_letter].width = max(
            10, _width(text) + 2
        )
    ws.freeze_panes = "C2"
    with atomic_path(path) as tmp:
        wb.save(tmp)


def _cjk_font() -> str | None:
    """The first installed font that shows Chinese, or None."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in _CJK_FONTS if name in installed), None)


def _write_chart(path: Path, table: pd.DataFrame, *, quarter: str | None, lang: Lang) -> None:
    """Horizontal bars of 核查率 and 办结率 per office, best ranked at the top; in English
    (office codes) when no CJK font is installed."""
    font = _cjk_font()
    zh = lang == "zh" and font is not None
    title = _title(quarter, lang="zh" if zh else "en")
    rows = table[table["issued"] > 0].iloc[::-1]
    names = rows["office_name"] if zh else rows["office_code"]
    fig = Figure(figsize=(7, 1.2 + 0.45 * max(len(rows), 1)), dpi=120)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    for offset, field, colour in ((0.2, "verify_rate", "#4393c3"), (-0.2, "close_rate", "#1a9850")):
        values = rows[field].to_numpy(dtype=float) * 100
        name = STATS_HEADERS[field] if zh else field.replace("_rate", "")
        bars = ax.barh(y + offset, values, height=0.38, color=colour, label=name)
        ax.bar_label(bars, fmt="%.0f%%", padding=2, fontsize=8)
    ax.set_yticks(y, list(names))
    ax.set_xlim(0, 110)
    ax.set_xlabel("%")
    ax.set_title(title, pad=20)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=8)
    if zh:
        for text in [ax.title, *ax.get_yticklabels(), *ax.get_legend().get_texts()]:
            text.set_fontfamily(font)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def format_table(table: pd.DataFrame, *, lang: Lang = "zh") -> str:
    """``table`` (and a total row) as aligned plain text, rates in percent."""
    shown = _with_total(table, lang=lang).astype(object)
    for field in _RATES:
        shown[field] = [f"{v:.1%}" if pd.notna(v) else "—" for v in shown[field]]
    shown["rank"] = ["" if pd.isna(v) else str(v) for v in shown["rank"]]
    cells = [[label(STATS_HEADERS, f, lang=lang) for f in STATS_FIELDS]]
    cells += [[str(v) for v in row] for row in shown.itertuples(index=False, name=None)]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(STATS_FIELDS))]
    return "\n".join(
        "  ".join(
            text + " " * (w - _width(text)) for text, w in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    )


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def stats(
    register: str | os.PathLike,
    *,
    quarter: str | None = None,
    out_dir: str | os.PathLike | None = None,
    lang: Lang = "zh",
    as_of: datetime | None = None,
) -> StatsReport:
    """Read the register, compute :func:`office_stats` and write them (:func:`write_stats`).

    ``out_dir`` defaults to ``stats/`` beside the register; files are named
    ``stats_<quarter>`` or ``stats_all``.
    """
    table = office_stats(read_register(register), quarter=quarter, as_of=as_of)
    out = Path(out_dir) if out_dir is not None else Path(register).parent / "stats"
    return StatsReport(table=table, files=write_stats(table, out, quarter=quarter, lang=lang))
