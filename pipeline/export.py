"""Write a quarter's outputs: the GeoPackage, one worklist package per office, the summary.

Layout under ``out_dir`` (= ``<out>/<quarter>/``)::

    <quarter>.gpkg                 suspects, tasks, suppressed, offices, tiles (+ unassigned)
    worklists/<office_code>/<office_code>_<quarter>.gpkg   tasks, office
    worklists/<office_code>/<office_code>_<quarter>.csv    UTF-8 with BOM, for Excel
    worklists/<office_code>/<office_code>_<quarter>.xlsx   chips, dropdowns, dates, ready to print
    worklists/<office_code>/<office_code>_<quarter>.html   printable evidence pack, self-contained
    worklists/<office_code>/chips/<task_id>_{before,after}.jpg   (from :mod:`pipeline.chips`)
    summary.json                   counts and areas per office, suppression, unassigned, tile QA

GeoPackages are version 1.2 with spatial indexes and layer descriptions, in the grid CRS, with
UTC datetimes and QGIS default styles (``data/*.qml``, with Chinese field aliases and value maps
from :mod:`pipeline.vocab`) in the ``layer_styles`` table QGIS itself uses. Every file is written
to a temporary file in its folder and renamed into place, so a failure leaves the earlier file.
Worklist text cells starting with ``= + - @`` (or a tab or carriage return) get a leading ``'``
so that spreadsheets do not run them as formulas.

The xlsx sheet holds one row per task with its before and after chips in the last two columns
(when chips are given); the html evidence pack (``data/worklist.html``) starts with the office's
summary, then one card per task: chips (embedded as base64, so the file needs no network and no
other file), location, measures and blank fields to fill in on site.
"""

from __future__ import annotations

import base64
import html
import json
import os
import zipfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from string import Template
from xml.sax.saxutils import quoteattr

import geopandas as gpd
import pandas as pd
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.drawing.image import Image as SheetImage
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.writer.excel import ExcelWriter

from errors import InputError

from .atomic import atomic_path, write_json, write_layers
from .chips import Chip
from .executors import Executor
from .tasks import TaskSet
from .vocab import (
    ALIASES,
    CHANGE_TYPES,
    DATE_FIELDS,
    DISPOSALS,
    FILL_IN_FIELDS,
    LANGS,
    REASONS,
    RESULTS,
    STATUSES,
    TASK_HEADERS,
    WORDS,
    YES_NO,
    Lang,
    header,
    label,
)

__all__ = ["write_gpkg", "write_quarter"]

_DESCRIPTIONS = {
    "suspects": "疑似变化图斑：本季度检测到的全部变化 (all change polygons detected this quarter)",
    "tasks": "核查任务：下发各街道的图斑 (suspects issued to street offices for verification)",
    "suppressed": "未下发图斑及原因 (suspects not issued, with reason)",
    "unassigned": "不在任何街道范围内的图斑 (suspects outside every street office)",
    "offices": "街道办辖区 (street office areas)",
    "office": "本街道辖区 (this street office's area)",
    "tiles": "分析瓦片及质量检查 (analysis tiles with quality checks)",
    "clouds": "云、薄雾及云影遮挡区，未比对 (cloud, haze and cloud shadow: not compared)",
}
_STYLES = {"office": "offices"}  # layer -> style file stem, where they differ
_VALUE_MAPS = {
    "change_type": CHANGE_TYPES,
    "result": RESULTS,
    "disposal": DISPOSALS,
    "status": STATUSES,
}
_SHEET_VALUES = ("change_type", "result", "disposal")  # value maps shown in worklist sheets
_NUMBER_FORMATS = {
    "area_m2": "0.0",
    "height_gain_m": "0.0",
    "score": "0.00",
    "x": "0.00",
    "y": "0.00",
    "lon": "0.0000000",
    "lat": "0.0000000",
    "issued_at": "yyyy-mm-dd hh:mm",
    "due_at": "yyyy-mm-dd",
    **{field: "yyyy-mm-dd" for field in DATE_FIELDS},
}
_ROUNDING = {"area_m2": 1, "height_gain_m": 1, "score": 2}
_FORMULA_START = r"[=+\-@\t\r]"
_CHIP_PX = 150  # chip width and height in the sheet, pixels


def write_quarter(
    out_dir: str | os.PathLike,
    *,
    quarter: str,
    suspects: gpd.GeoDataFrame,
    taskset: TaskSet,
    offices: gpd.GeoDataFrame,
    tiles: gpd.GeoDataFrame,
    clouds: gpd.GeoDataFrame | None = None,
    lang: Lang = "zh",
    chips: Mapping[str, Chip] | None = None,
    executor: Executor | None = None,
) -> dict:
    """Write the quarter's GeoPackage, every office's worklists and ``summary.json``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        ``<out>/<quarter>/``; created if missing. Files already there are replaced one by one.
    quarter : str
        The quarter's ID, as given to :func:`pipeline.tasks.build_tasks`.
    suspects : geopandas.GeoDataFrame
        All of the quarter's suspects, in the grid CRS (which every layer is written in).
    taskset : pipeline.tasks.TaskSet
        The suspects split into tasks, suppressed and unassigned.
    offices : geopandas.GeoDataFrame
        ``office_code``, ``office_name`` and polygons; every office gets a worklist package,
        with a header-only sheet when it has no task.
    tiles : geopandas.GeoDataFrame
        One row per analysis tile: footprint polygon and QA columns, written as they are.
    clouds : geopandas.GeoDataFrame, optional
        Where cloud, haze or cloud shadow kept the epochs from being compared; written as
        layer ``clouds`` when given.
    lang : {"zh", "en"}
        Language of worklist headers and labels: Chinese, or the English field names and codes.
    chips : mapping, optional
        ``task_id`` -> :class:`pipeline.chips.Chip`, as from :func:`pipeline.chips.write_chips`,
        shown in the xlsx and html worklists; without it they show no images.
    executor : pipeline.executors.Executor, optional
        Where the offices' csv, xlsx and html worklists are written, an office per job, while
        this process writes the GeoPackages; all in this process without one.

    Returns
    -------
    dict
        The summary also written to ``summary.json``: totals, per office counts and areas
        (m²) by change type and priority, suppression by reason, unassigned, warnings and the
        per-tile QA records.
    """
    if lang not in LANGS:
        raise InputError(f"worklist language {lang!r} is not one of {', '.join(LANGS)}")
    out_dir = Path(out_dir)
    crs = suspects.crs
    offices = offices.to_crs(crs)
    layers = {
        "suspects": suspects,
        "tasks": taskset.tasks,
        "suppressed": taskset.suppressed,
        "offices": offices,
        "tiles": tiles.to_crs(crs),
    }
    if clouds is not None:
        layers["clouds"] = clouds.to_crs(crs)
    if not taskset.unassigned.empty:
        layers["unassigned"] = taskset.unassigned
    summary = _summary(quarter, suspects=suspects, taskset=taskset, offices=offices, tiles=tiles)

    table = _worklist_table(taskset.tasks, lang=lang)
    geopackages = {out_dir / f"{quarter}.gpkg": layers}
    sheets = []
    for code, name in zip(offices["office_code"], offices["office_name"], strict=True):
        stem = out_dir / "worklists" / code / f"{code}_{quarter}"
        mine = (taskset.tasks["office_code"] == code).to_numpy()
        tasks = taskset.tasks[mine]
        geopackages[stem.with_suffix(".gpkg")] = {
            "tasks": tasks,
            "office": offices[offices["office_code"] == code],
        }
        sheets.append(
            _OfficeSheets(
                stem,
                table[mine],
                tasks,
                office=(code, name),
                quarter=quarter,
                summary=summary["offices"][code],
                lang=lang,
                chips=None
                if chips is None
                else {t: chips[t] for t in tasks["task_id"] if t in chips},
            )
        )
    # The driver alone writes GeoPackages (SQLite has one writer); meanwhile the offices'
    # sheets are written on the executor's workers, an office at a time.
    with ThreadPoolExecutor(1, thread_name_prefix="geopackages") as driver:
        written = driver.submit(_write_geopackages, geopackages)
        if executor is None:
            for job in sheets:
                _write_sheets(job)
        else:
            for _ in executor.map(_write_sheets, sheets, desc="worklists", unit="office"):
                pass
        written.result()
    write_json(out_dir / "summary.json", summary)
    return summary


@dataclass(frozen=True)
class _OfficeSheets:
    """An office's worklist sheets to write: ``<stem>.csv``, ``.xlsx`` and ``.html``."""

    stem: Path
    table: pd.DataFrame  # worklist rows (see _worklist_table)
    tasks: gpd.GeoDataFrame
    office: tuple[str, str]  # code, name
    quarter: str
    summary: dict
    lang: Lang
    chips: Mapping[str, Chip] | None


def _write_sheets(job: _OfficeSheets) -> None:
    """Worker: write one office's csv, xlsx and html worklists."""
    _write_csv(job.stem.with_suffix(".csv"), job.table, lang=job.lang)
    _write_xlsx(job.stem.with_suffix(".xlsx"), job.table, lang=job.lang, chips=job.chips)
    _write_html(
        job.stem.with_suffix(".html"),
        job.tasks,
        office=job.office,
        quarter=job.quarter,
        summary=job.summary,
        lang=job.lang,
        chips=job.chips or {},
    )


def _write_geopackages(geopackages: Mapping[Path, Mapping[str, gpd.GeoDataFrame]]) -> None:
    for path, layers in geopackages.items():
        write_gpkg(path, layers)


# --- GeoPackage -------------------------------------------------------------------------------


def write_gpkg(
    path: str | os.PathLike,
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    tables: Mapping[str, pd.DataFrame] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Write ``layers`` with their default QGIS styles, and ``tables``, to one GeoPackage 1.2.

    Layers named like a style in ``data/`` (``tasks``, ``suspects``, ``offices``...) get it,
    with Chinese field aliases; ``descriptions`` add to or override the built-in layer
    descriptions. The file is written atomically (:func:`pipeline.atomic.write_layers`).
    """
    write_layers(
        path,
        layers,
        descriptions={**_DESCRIPTIONS, "layer_styles": "QGIS layer styles", **(descriptions or {})},
        tables={**(tables or {}), "layer_styles": _layer_styles(dict(layers))},
    )


def _layer_styles(layers: dict[str, gpd.GeoDataFrame]) -> pd.DataFrame:
    """Rows of the QGIS ``layer_styles`` table, one default style per layer."""
    names = list(layers)
    return pd.DataFrame(
        {
            "f_table_catalog": "",
            "f_table_schema": "",
            "f_table_name": names,
            "f_geometry_column": "geom",
            "styleName": names,
            "styleQML": [_qml(name, list(frame.columns)) for name, frame in layers.items()],
            "styleSLD": "",
            "useAsDefault": True,
            "description": [_DESCRIPTIONS.get(name, name) for name in names],
            "owner": "",
            "ui": "",
            "update_time": pd.Timestamp(datetime.now(UTC)),
        }
    )


def _qml(layer: str, fields: list[str]) -> str:
    """The QML of ``data/<style>.qml`` with Chinese aliases and value maps for ``fields``."""
    stem = _STYLES.get(layer, layer)
    qml = files("data").joinpath(f"{stem}.qml").read_text(encoding="utf-8")
    widgets = "".join(_value_map(field) for field in fields if field in _VALUE_MAPS)
    aliases = "".join(
        f'    <alias field="{field}" name={quoteattr(ALIASES[field])}/>\n'
        for field in fields
        if field in ALIASES
    )
    extra = f"  <fieldConfiguration>\n{widgets}  </fieldConfiguration>\n"
    extra += f"  <aliases>\n{aliases}  </aliases>\n"
    return qml.replace("</qgis>", extra + "</qgis>")


def _value_map(field: str) -> str:
    """A QGIS ValueMap edit widget that shows ``field``'s codes by their Chinese labels."""
    entries = "".join(
        f'<Option type="Map"><Option name={quoteattr(zh)} type="QString" value={quoteattr(code)}/>'
        "</Option>"
        for code, zh in _VALUE_MAPS[field].items()
    )
    return (
        f'    <field name="{field}" configurationFlags="NoFlag"><editWidget type="ValueMap">'
        f'<config><Option type="Map"><Option name="map" type="List">{entries}</Option></Option>'
        "</config></editWidget></field>\n"
    )


# --- worklists --------------------------------------------------------------------------------


def _worklist_table(tasks: gpd.GeoDataFrame, *, lang: Lang) -> pd.DataFrame:
    """Tasks as shown to offices: worklist columns, labels in ``lang``, naive UTC datetimes,
    rounded measures and text that spreadsheets will not run as formulas."""
    table = pd.DataFrame(tasks[list(TASK_HEADERS)]).reset_index(drop=True)
    for field in _SHEET_VALUES:
        vocabulary = _VALUE_MAPS[field]
        table[field] = table[field].map({c: label(vocabulary, c, lang=lang) for c in vocabulary})
    table["key_case"] = table["key_case"].map(
        {True: label(YES_NO, "yes", lang=lang), False: label(YES_NO, "no", lang=lang)}
    )
    table = table.round(_ROUNDING)
    for field in table.columns:
        column = table[field]
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            table[field] = column.dt.tz_convert("UTC").dt.tz_localize(None)
        elif not (
            pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_dtype(column)
        ):
            text = column.astype("str").str.replace(ILLEGAL_CHARACTERS_RE, "", regex=True)
            risky = text.str.match(_FORMULA_START, na=False)
            table[field] = text.mask(risky, "'" + text)
    return table


def _write_csv(path: Path, table: pd.DataFrame, *, lang: Lang) -> None:
    """Write ``table`` as CSV in UTF-8 with a BOM (so Excel reads the Chinese right)."""
    out = table.rename(columns=lambda field: header(field, lang=lang))
    with atomic_path(path) as tmp:
        out.to_csv(
            tmp,
            index=False,
            encoding="utf-8-sig",
            lineterminator="\r\n",
            date_format="%Y-%m-%d %H:%M:%S",
        )


def _write_xlsx(
    path: Path, table: pd.DataFrame, *, lang: Lang, chips: Mapping[str, Chip] | None
) -> None:
    """Write ``table`` as one formatted sheet with dropdowns for the fill-in columns and, with
    ``chips``, each task's before and after chips in two last columns."""
    wb = Workbook()
    ws = wb.active
    ws.title = label(WORDS, "tasks", lang=lang)
    fields = list(table.columns)
    ws.append([header(field, lang=lang) for field in fields])
    for row in table.astype(object).where(table.notna(), None).itertuples(index=False, name=None):
        ws.append(row)
    if chips is not None:
        _add_chips(ws, table["task_id"], chips, first_col=len(fields) + 1, lang=lang)
    last_row = max(len(table), 1) + 1
    for col, field in enumerate(fields, start=1):
        letter = get_column_letter(col)
        cell = ws.cell(row=1, column=col)
        cell.font = Font(bold=True)
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        cell.fill = PatternFill("solid", fgColor="FFF2CC" if field in FILL_IN_FIELDS else "D9D9D9")
        ws.column_dimensions[letter].width = _column_width(field, cell.value, table[field])
        if field in _NUMBER_FORMATS:
            ws.column_dimensions[letter].number_format = _NUMBER_FORMATS[field]
            for (data_cell,) in ws.iter_rows(min_row=2, min_col=col, max_col=col):
                data_cell.number_format = _NUMBER_FORMATS[field]
        validation = _validation(field, lang=lang)
        if validation is not None:
            validation.add(f"{letter}2:{letter}{last_row}")
            ws.add_data_validation(validation)
    ws.freeze_panes = "B2"
    ws.auto_filter.ref = f"A1:{get_column_letter(ws.max_column)}{len(table) + 1}"
    ws.print_title_rows = "1:1"
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.oddFooter.center.text = "&P / &N"
    with atomic_path(path) as tmp:
        _save_workbook(wb, tmp)


class _Archive(zipfile.ZipFile):
    """The workbook's zip archive, its image chips stored as they are (deflate cannot shrink
    them and takes most of the time of saving a worklist with chips)."""

    def writestr(self, zinfo_or_arcname, data, compress_type=None, compresslevel=None):
        name = str(getattr(zinfo_or_arcname, "filename", zinfo_or_arcname))
        if name.endswith((".png", ".jpeg", ".jpg")):
            compress_type = zipfile.ZIP_STORED
        super().writestr(zinfo_or_arcname, data, compress_type, compresslevel)


def _save_workbook(wb: Workbook, path: Path) -> None:
    """:meth:`Workbook.save`, with chips stored rather than deflated (see :class:`_Archive`)."""
    wb.properties.modified = datetime.now(UTC).replace(tzinfo=None)
    with _Archive(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        ExcelWriter(wb, archive).save()


def _add_chips(
    ws, task_ids: pd.Series, chips: Mapping[str, Chip], *, first_col: int, lang: Lang
) -> None:
    """Put each task's before and after chip in its row, in columns ``first_col`` and next."""
    for offset, (side, word) in enumerate((("before", "before image"), ("after", "after image"))):
        col = first_col + offset
        letter = get_column_letter(col)
        title = ws.cell(row=1, column=col, value=label(WORDS, word, lang=lang))
        title.font = Font(bold=True)
        title.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        title.fill = PatternFill("solid", fgColor="D9D9D9")
        ws.column_dimensions[letter].width = _CHIP_PX / 7 + 1
        for row, task_id in enumerate(task_ids, start=2):
            chip = chips.get(task_id)
            image_file = getattr(chip, side) if chip is not None else None
            if image_file is None:
                ws.cell(row=row, column=col, value=label(WORDS, "no image", lang=lang))
                continue
            image = SheetImage(str(image_file))
            image.width = image.height = _CHIP_PX
            ws.add_image(image, f"{letter}{row}")
    for row in range(2, len(task_ids) + 2):
        ws.row_dimensions[row].height = _CHIP_PX * 0.75 + 4  # points


def _validation(field: str, *, lang: Lang) -> DataValidation | None:
    """The dropdown (result, disposal) or date check (verified_at, closed_at) of a column."""
    zh = lang == "zh"
    if field in ("result", "disposal"):
        vocabulary = RESULTS if field == "result" else DISPOSALS
        choices = ",".join(label(vocabulary, code, lang=lang) for code in vocabulary)
        return DataValidation(
            type="list",
            formula1=f'"{choices}"',
            allow_blank=True,
            showErrorMessage=True,
            errorTitle=header(field, lang=lang),
            error=("请从下拉列表中选择：" if zh else "Pick one of: ") + choices,
        )
    if field in DATE_FIELDS:
        return DataValidation(
            type="date",
            operator="greaterThanOrEqual",
            formula1="DATE(2000,1,1)",
            allow_blank=True,
            showErrorMessage=True,
            errorTitle=header(field, lang=lang),
            error="请填写日期，如 2024-05-20" if zh else "Enter a date, e.g. 2024-05-20",
        )
    return None


def _column_width(field: str, title: str, values: pd.Series) -> float:
    """Column width in characters (CJK characters count double): fits the header and the
    values, between 8 and 40; wider for the fill-in columns, widest for the note."""

    def width(text: str) -> int:
        return len(text) + sum(ord(ch) > 0x2E7F for ch in text)

    if pd.api.types.is_datetime64_any_dtype(values):
        shown = [len(_NUMBER_FORMATS[field])]
    else:
        shown = values.dropna().astype(str).map(width).tolist()
    minimum = 30 if field == "note" else 12 if field in FILL_IN_FIELDS else 8
    return float(min(max(width(title) + 2, *(n + 2 for n in shown), minimum), 40))


# --- evidence pack (html) --------------------------------------------------------------------

_CARD_FACTS = (
    "change_type",
    "area_m2",
    "height_gain_m",
    "score",
    "prior_task_id",
    "issued_at",
    "due_at",
)
_DECIMALS = {"area_m2": 1, "height_gain_m": 1, "score": 2, "x": 2, "y": 2, "lon": 6, "lat": 6}


def _write_html(
    path: Path,
    tasks: gpd.GeoDataFrame,
    *,
    office: tuple[str, str],
    quarter: str,
    summary: dict,
    lang: Lang,
    chips: Mapping[str, Chip],
) -> None:
    """Write an office's printable evidence pack: its summary, then a card per task.

    Cards (each with its chips inline) are written one at a time, so memory does not grow with
    the number of tasks.
    """
    code, name = office
    title = (
        f"{name}（{code}）{quarter} {WORDS['worklist']}"
        if lang == "zh"
        else f"{name} ({code}) {quarter} worklist"
    )
    page = files("data").joinpath("worklist.html").read_text(encoding="utf-8")
    head, tail = (
        Template(part).substitute(
            lang="zh-CN" if lang == "zh" else "en",
            title=html.escape(title),
            summary=_html_summary(tasks, summary, quarter=quarter, lang=lang),
        )
        for part in page.split("$cards", 1)
    )
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(head)
        for n, task in enumerate(tasks.to_dict("records")):
            out.write(("\n" if n else "") + _html_card(task, chips.get(task["task_id"]), lang=lang))
        out.write(tail)


def _html_summary(tasks: gpd.GeoDataFrame, summary: dict, *, quarter: str, lang: Lang) -> str:
    """The office's totals, its tasks by change type and by priority, as html tables."""
    word = lambda key: html.escape(label(WORDS, key, lang=lang))  # noqa: E731
    head = lambda field: html.escape(header(field, lang=lang))  # noqa: E731
    due = tasks["due_at"].min() if len(tasks) else pd.NaT
    totals = [
        (word("quarter"), html.escape(quarter)),
        (word("number of tasks"), str(summary["tasks"])),
        (head("key_case"), str(summary["key_cases"])),
        (head("area_m2"), f"{summary['area_m2']:.1f}"),
        (head("due_at"), _shown("due_at", due, lang=lang)),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in totals)
    by_type = "".join(
        f"<tr><td>{html.escape(label(CHANGE_TYPES, t, lang=lang))}</td><td>{v['tasks']}</td>"
        f"<td>{v['area_m2']:.1f}</td></tr>"
        for t, v in summary["by_change_type"].items()
        if v["tasks"]
    )
    by_priority = "".join(
        f"<tr><td>{p}</td><td>{n}</td></tr>" for p, n in summary["by_priority"].items()
    )
    return (
        f"<table>{rows}</table>"
        f"<table><tr><th>{head('change_type')}</th><th>{word('number of tasks')}</th>"
        f"<th>{head('area_m2')}</th></tr>{by_type}</table>"
        f"<table><tr><th>{head('priority')}</th><th>{word('number of tasks')}</th></tr>"
        f"{by_priority}</table>"
    )


def _html_card(task: dict, chip: Chip | None, *, lang: Lang) -> str:
    """One task's card: ID and badges, before/after chips, facts, location, fields to fill."""
    head = lambda field: html.escape(header(field, lang=lang))  # noqa: E731
    badges = f'<span class="badge p{task["priority"]}">{head("priority")} {task["priority"]}</span>'
    if task["key_case"]:
        badges += f'<span class="badge key">{head("key_case")}</span>'
    figures = "".join(
        _html_figure(
            getattr(chip, side) if chip else None,
            getattr(chip, f"{side}_kind") if chip else None,
            side,
            lang=lang,
        )
        for side in ("before", "after")
    )
    facts = "".join(
        f"<tr><td>{head(field)}</td><td>{_shown(field, task[field], lang=lang)}</td></tr>"
        for field in _CARD_FACTS
    )
    where = (
        f"X {_shown('x', task['x'], lang=lang)} · Y {_shown('y', task['y'], lang=lang)} · "
        f"{head('lon')} {_shown('lon', task['lon'], lang=lang)} · "
        f"{head('lat')} {_shown('lat', task['lat'], lang=lang)}"
    )
    facts += f"<tr><td>{html.escape(label(WORDS, 'location', lang=lang))}</td><td>{where}</td></tr>"
    fill = "".join(
        f"<tr><td>{head(field)}</td><td>{_blank(field, lang=lang)}</td></tr>"
        for field in FILL_IN_FIELDS
    )
    return (
        f'<article class="card"><header><h2>{html.escape(task["task_id"])}</h2>'
        f"<div>{badges}</div></header>"
        f'<div class="chips">{figures}</div>'
        f'<table class="facts">{facts}</table>'
        f'<table class="fill">{fill}</table></article>'
    )


def _html_figure(chip: Path | None, kind: str | None, side: str, *, lang: Lang) -> str:
    caption = label(WORDS, side, lang=lang)
    if chip is None or kind is None:
        body = f'<div class="none">{html.escape(label(WORDS, "no image", lang=lang))}</div>'
    else:
        mime = "image/png" if Path(chip).suffix.lower() == ".png" else "image/jpeg"
        data = base64.b64encode(Path(chip).read_bytes()).decode("ascii")
        body = f'<img alt="{html.escape(caption)}" src="data:{mime};base64,{data}">'
        caption += f" · {label(WORDS, kind, lang=lang)}"
    return f"<figure>{body}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _blank(field: str, *, lang: Lang) -> str:
    """An empty fill-in cell; the choices to tick for ``result`` and ``disposal``."""
    vocabulary = {"result": RESULTS, "disposal": DISPOSALS}.get(field)
    if vocabulary is None:
        return ""
    spans = "".join(
        f"<span>{html.escape(label(vocabulary, c, lang=lang))}</span>" for c in vocabulary
    )
    return f'<div class="choices">{spans}</div>'


def _shown(field: str, value, *, lang: Lang) -> str:
    """``value`` of ``field`` as html text: labels in ``lang``, rounded numbers, dates."""
    if value is None or value is pd.NaT or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if field in _VALUE_MAPS:
        return html.escape(label(_VALUE_MAPS[field], value, lang=lang))
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M UTC" if field == "issued_at" else "%Y-%m-%d")
    if field in _DECIMALS:
        return f"{value:.{_DECIMALS[field]}f}"
    return html.escape(str(value))


# --- summary ----------------------------------------------------------------------------------


def _summary(
    quarter: str,
    *,
    suspects: gpd.GeoDataFrame,
    taskset: TaskSet,
    offices: gpd.GeoDataFrame,
    tiles: gpd.GeoDataFrame,
) -> dict:
    tasks = taskset.tasks
    codes = list(offices["office_code"])
    types = list(CHANGE_TYPES)
    by_type = tasks.groupby(["office_code", "change_type"])["area_m2"].agg(["size", "sum"])
    count = by_type["size"].unstack().reindex(index=codes, columns=types).fillna(0)
    area = by_type["sum"].unstack().reindex(index=codes, columns=types).fillna(0.0)
    priority = (
        tasks.groupby(["office_code", "priority"])
        .size()
        .unstack()
        .reindex(index=codes, columns=[1, 2, 3])
        .fillna(0)
    )
    key_cases = tasks.groupby("office_code")["key_case"].sum().reindex(codes).fillna(0)
    per_office = {
        code: {
            "office_name": name,
            "tasks": int(count.loc[code].sum()),
            "key_cases": int(key_cases[code]),
            "area_m2": round(float(area.loc[code].sum()), 1),
            "by_change_type": {
                t: {"tasks": int(count.at[code, t]), "area_m2": round(float(area.at[code, t]), 1)}
                for t in types
            },
            "by_priority": {str(p): int(priority.at[code, p]) for p in (1, 2, 3)},
        }
        for code, name in zip(codes, offices["office_name"], strict=True)
    }

    reason = taskset.suppressed["reason"].astype("str")
    kind = reason.str.split(":", n=1).str[0]
    permit_ids = reason[kind == "permit"].str.split(":", n=1).str[1]
    unassigned_area = round(float(taskset.unassigned["area_m2"].sum()), 1)
    warnings = []
    if len(taskset.unassigned):
        warnings.append(
            f"{len(taskset.unassigned)} suspects ({unassigned_area} m²) lie outside every office "
            f"and were not issued; see layer 'unassigned' in {quarter}.gpkg and check that the "
            "offices cover the whole area"
        )
    tile_records = pd.DataFrame(tiles.drop(columns=tiles.geometry.name))
    return {
        "quarter": quarter,
        "crs": suspects.crs.to_string(),
        "totals": {
            "suspects": len(suspects),
            "tasks": len(tasks),
            "key_cases": int(tasks["key_case"].sum()),
            "area_m2": round(float(tasks["area_m2"].sum()), 1),
            "suppressed": len(taskset.suppressed),
            "unassigned": len(taskset.unassigned),
        },
        "offices": per_office,
        "suppressed": {
            "by_reason": {r: int((kind == r).sum()) for r in REASONS},
            "by_permit": {k: int(v) for k, v in permit_ids.value_counts().sort_index().items()},
        },
        "unassigned": {"count": len(taskset.unassigned), "area_m2": unassigned_area},
        "warnings": warnings,
        "tiles": {
            "count": len(tiles),
            "records": json.loads(
                tile_records.to_json(orient="records", date_format="iso", force_ascii=False)
            ),
        },
    }
