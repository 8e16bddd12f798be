"""The quarter's outputs: GeoPackage (1.2, styles), worklists (gpkg, csv, xlsx), summary.json."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pyogrio
import pytest
import shapely
from PIL import Image

import pipeline.export
from errors import InputError
from pipeline.chips import Chip
from pipeline.export import write_quarter
from pipeline.tasks import build_tasks
from pipeline.vocab import CHANGE_TYPES, DISPOSALS, RESULTS, TASK_HEADERS

GRID = "EPSG:4547"
X0, Y0 = 500_000.0, 2_500_000.0
QUARTER = "2024Q1"


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


@pytest.fixture(scope="module")
def quarter_inputs():
    """Offices A, B (with a name that looks like a formula) and C (no tasks); five suspects."""
    offices = gpd.GeoDataFrame(
        {"office_code": ["A", "B", "C"], "office_name": ["甲街道", '=HYPERLINK("x")', "丙街道"]},
        geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100), box(200, 0, 300, 100)],
        crs=GRID,
    )
    geoms = [
        box(10, 10, 30, 30),  # A, new building
        box(40, 40, 50, 50),  # A, inside the permit
        box(120, 10, 160, 40),  # B, 1200 m²: key case
        box(150, 60, 152, 62),  # B, 4 m²: below min area
        box(500, 0, 520, 20),  # outside every office
    ]
    suspects = gpd.GeoDataFrame(
        {
            "suspect_id": [f"r0_c0-{i:04d}" for i in range(5)],
            "tile": "r0_c0",
            "change_type": ["new_building", "extension", "other", "demolition", "land_clearing"],
            "area_m2": shapely.area(np.asarray(geoms, dtype=object)),
            "height_gain_m": [3.26, np.nan, -2.5, np.nan, np.nan],
            "score": [0.8, 0.7, 0.6, 0.5, 0.9],
        },
        geometry=geoms,
        crs=GRID,
    )
    permits = gpd.GeoDataFrame({"permit_id": ["P9"]}, geometry=[box(35, 35, 55, 55)], crs=GRID)
    tiles = gpd.GeoDataFrame(
        {"tile": ["r0_c0", "r0_c1"], "valid_fraction": [0.99, np.nan], "shift_px": [0.4, 1.5]},
        geometry=[box(0, 0, 300, 100), box(300, 0, 600, 100)],
        crs=GRID,
    )
    clouds = gpd.GeoDataFrame({"area_m2": [1500.0]}, geometry=[box(250, 50, 280, 100)], crs=GRID)
    taskset = build_tasks(
        suspects,
        offices,
        quarter=QUARTER,
        permits=permits,
        clouds=clouds,
        issued_at=datetime(2024, 4, 1, 8, 30, tzinfo=UTC),
    )
    return {
        "suspects": suspects,
        "taskset": taskset,
        "offices": offices,
        "tiles": tiles,
        "clouds": clouds,
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory, quarter_inputs):
    """The quarter written once, in Chinese, for the tests that only read it."""
    out = tmp_path_factory.mktemp("out") / QUARTER
    summary = write_quarter(out, quarter=QUARTER, **quarter_inputs)
    return out, summary


#: The layers of the quarter GeoPackage written from ``quarter_inputs``.
LAYERS = ("suspects", "tasks", "suppressed", "offices", "tiles", "clouds", "unassigned")


def worklist(out, code, ext, quarter=QUARTER):
    return out / "worklists" / code / f"{code}_{quarter}.{ext}"


# --- the quarter GeoPackage --------------------------------------------------------------------


def test_quarter_gpkg_layers_crs_and_version(written):
    out, _ = written
    path = out / f"{QUARTER}.gpkg"
    layers = dict(pyogrio.list_layers(path))
    assert set(layers) == {*LAYERS, "layer_styles"}
    for name in LAYERS:
        assert pyogrio.read_info(path, layer=name)["crs"] == GRID
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # "GPKG"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200  # 1.2.0
        contents = dict(db.execute("SELECT table_name, description FROM gpkg_contents"))
        indexed = {
            t
            for (t,) in db.execute(
                "SELECT table_name FROM gpkg_extensions WHERE extension_name = 'gpkg_rtree_index'"
            )
        }
        issued = db.execute("SELECT DISTINCT issued_at FROM tasks").fetchall()
    assert "街道办辖区" in contents["offices"] and contents["tasks"]
    assert indexed == set(LAYERS)
    assert issued == [("2024-04-01T08:30:00.000Z",)]


def test_quarter_gpkg_round_trips_the_tasks(written, quarter_inputs):
    out, _ = written
    tasks = gpd.read_file(out / f"{QUARTER}.gpkg", layer="tasks")
    expected = quarter_inputs["taskset"].tasks
    assert (
        tasks["task_id"].tolist()
        == expected["task_id"].tolist()
        == [
            "2024Q1-A-0001",
            "2024Q1-B-0001",
        ]
    )
    assert tasks["key_case"].tolist() == [False, True]
    assert tasks["issued_at"].dt.tz is not None
    suppressed = gpd.read_file(out / f"{QUARTER}.gpkg", layer="suppressed")
    assert sorted(suppressed["reason"]) == ["below_min_area", "permit:P9"]


def test_layer_styles_are_qgis_defaults(written):
    out, _ = written
    path = out / f"{QUARTER}.gpkg"
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(layer_styles)")]
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, styleQML, useAsDefault "
            "FROM layer_styles"
        ).fetchall()
        kind = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert columns == [
        "id",
        "f_table_catalog",
        "f_table_schema",
        "f_table_name",
        "f_geometry_column",
        "styleName",
        "styleQML",
        "styleSLD",
        "useAsDefault",
        "description",
        "owner",
        "ui",
        "update_time",
    ]
    assert kind == ("attributes",)
    styles = {name: (geom, qml, default) for name, geom, _, qml, default in rows}
    assert set(styles) == set(LAYERS)
    for geom, qml, default in styles.values():
        assert geom == "geom" and default == 1
        assert ET.fromstring(qml).tag == "qgis"
    tasks_qml = ET.fromstring(styles["tasks"][1])
    aliases = {a.get("field"): a.get("name") for a in tasks_qml.iter("alias")}
    assert aliases["task_id"] == "任务编号" and aliases["result"] == "核查结果"
    widgets = {f.get("name"): f.find("editWidget") for f in tasks_qml.iter("field")}
    assert widgets["result"].get("type") == "ValueMap"
    pairs = {
        o.get("name"): o.get("value") for o in widgets["result"].iter("Option") if o.get("value")
    }
    assert pairs == {zh: code for code, zh in RESULTS.items()}
    suspects_qml = ET.fromstring(styles["suspects"][1])
    assert suspects_qml.find("renderer-v2").get("attr") == "change_type"


def test_shipped_styles_cover_the_vocabulary():
    qml = ET.fromstring(files("data").joinpath("suspects.qml").read_text(encoding="utf-8"))
    categories = {c.get("value"): c.get("label") for c in qml.iter("category")}
    assert categories == CHANGE_TYPES
    for stem in ("tasks", "suppressed", "unassigned", "offices", "tiles"):
        assert ET.fromstring(files("data").joinpath(f"{stem}.qml").read_text("utf-8")).tag == "qgis"


# --- worklists ---------------------------------------------------------------------------------


def test_every_office_gets_a_package_even_without_tasks(written):
    out, _ = written
    for code in ("A", "B", "C"):
        for ext in ("gpkg", "csv", "xlsx"):
            assert worklist(out, code, ext).is_file(), (code, ext)
    sheet = openpyxl.load_workbook(worklist(out, "C", "xlsx")).active
    assert sheet.max_row == 1
    assert [c.value for c in sheet[1]] == list(TASK_HEADERS.values())
    assert len(pd.read_csv(worklist(out, "C", "csv"), encoding="utf-8-sig")) == 0
    office_gpkg = worklist(out, "A", "gpkg")
    assert dict(pyogrio.list_layers(office_gpkg)).keys() == {"tasks", "office", "layer_styles"}
    assert gpd.read_file(office_gpkg, layer="tasks")["task_id"].tolist() == ["2024Q1-A-0001"]
    assert gpd.read_file(worklist(out, "C", "gpkg"), layer="tasks").empty


def test_xlsx_in_chinese(written):
    out, _ = written
    sheet = openpyxl.load_workbook(worklist(out, "A", "xlsx")).active
    headers = [c.value for c in sheet[1]]
    assert headers[0] == "任务编号"
    assert headers == list(TASK_HEADERS.values())
    row = dict(zip(headers, [c.value for c in sheet[2]], strict=True))
    assert row["任务编号"] == "2024Q1-A-0001"
    assert row["变化类型"] == "新增建筑" and row["重点督办"] == "否"
    assert row["面积(㎡)"] == 400 and row["增高(m)"] == 3.3
    assert row["下发时间(UTC)"] == datetime(2024, 4, 1, 8, 30)
    assert row["核查结果"] is None and row["核查日期"] is None

    col = {h: c.column_letter for h, c in zip(headers, sheet[1], strict=True)}
    lists = {
        str(dv.sqref): dv.formula1
        for dv in sheet.data_validations.dataValidation
        if dv.type == "list"
    }
    assert lists[f"{col['核查结果']}2"] == '"' + ",".join(RESULTS.values()) + '"'
    assert lists[f"{col['处置结果']}2"] == '"' + ",".join(DISPOSALS.values()) + '"'
    assert sheet[f"{col['核查日期']}2"].number_format == "yyyy-mm-dd"
    assert sheet[f"{col['办结日期']}2"].number_format == "yyyy-mm-dd"
    assert sheet.freeze_panes == "B2"
    assert sheet.print_title_rows == "$1:$1"
    assert sheet.page_setup.orientation == "landscape"
    assert sheet.page_setup.fitToWidth == 1 and sheet.sheet_properties.pageSetUpPr.fitToPage


def test_xlsx_and_csv_in_english(tmp_path, quarter_inputs):
    out = tmp_path / QUARTER
    write_quarter(out, quarter=QUARTER, lang="en", **quarter_inputs)
    sheet = openpyxl.load_workbook(worklist(out, "B", "xlsx")).active
    headers = [c.value for c in sheet[1]]
    assert headers == list(TASK_HEADERS)
    row = dict(zip(headers, [c.value for c in sheet[2]], strict=True))
    assert row["change_type"] == "other" and row["key_case"] == "yes" and row["priority"] == 1
    formulas = {dv.formula1 for dv in sheet.data_validations.dataValidation if dv.type == "list"}
    assert formulas == {'"' + ",".join(RESULTS) + '"', '"' + ",".join(DISPOSALS) + '"'}
    csv = pd.read_csv(worklist(out, "B", "csv"), encoding="utf-8-sig")
    assert list(csv.columns) == list(TASK_HEADERS)


def test_formula_like_text_is_neutralised(written):
    out, _ = written
    sheet = openpyxl.load_workbook(worklist(out, "B", "xlsx")).active
    headers = [c.value for c in sheet[1]]
    name = sheet.cell(row=2, column=headers.index("街道名称") + 1)
    assert name.value == '\'=HYPERLINK("x")' and name.data_type == "s"
    csv = pd.read_csv(worklist(out, "B", "csv"), encoding="utf-8-sig", dtype=str)
    assert csv["街道名称"].tolist() == ['\'=HYPERLINK("x")']
    # numbers are not text: a negative height stays a number
    assert csv["增高(m)"].tolist() == ["-2.5"]
    height = sheet.cell(row=2, column=headers.index("增高(m)") + 1)
    assert height.value == -2.5 and height.data_type == "n"


def test_csv_is_utf8_with_bom_and_chinese_labels(written):
    out, _ = written
    raw = worklist(out, "A", "csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    csv = pd.read_csv(worklist(out, "A", "csv"), encoding="utf-8-sig")
    assert list(csv.columns) == list(TASK_HEADERS.values())
    assert csv.loc[0, "变化类型"] == "新增建筑"
    assert csv.loc[0, "下发时间(UTC)"] == "2024-04-01 08:30:00"


# --- summary and atomic writes -----------------------------------------------------------------


def test_summary(written):
    out, returned = written
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == returned
    assert summary["totals"] == {
        "suspects": 5,
        "tasks": 2,
        "key_cases": 1,
        "area_m2": 1600.0,
        "suppressed": 2,
        "unassigned": 1,
    }
    assert summary["offices"]["A"]["by_change_type"]["new_building"] == {
        "tasks": 1,
        "area_m2": 400.0,
    }
    assert summary["offices"]["B"]["key_cases"] == 1
    assert summary["offices"]["B"]["by_priority"] == {"1": 1, "2": 0, "3": 0}
    assert summary["offices"]["C"]["tasks"] == 0
    assert summary["suppressed"] == {
        "by_reason": {
            "permit": 1,
            "below_min_area": 1,
            "water": 0,
            "cloud": 0,
            "persisting": 0,
            "demolition_observed": 0,
        },
        "by_permit": {"P9": 1},
    }
    assert summary["unassigned"] == {"count": 1, "area_m2": 400.0}
    assert len(summary["warnings"]) == 1 and "outside every office" in summary["warnings"][0]
    assert summary["tiles"]["count"] == 2
    assert summary["tiles"]["records"][1] == {
        "tile": "r0_c1",
        "valid_fraction": None,
        "shift_px": 1.5,
    }


def test_no_unassigned_layer_or_warning_when_all_assigned(tmp_path, quarter_inputs):
    suspects = quarter_inputs["suspects"].iloc[:4]
    taskset = build_tasks(
        suspects,
        quarter_inputs["offices"],
        quarter=QUARTER,
        issued_at=datetime(2024, 4, 1, tzinfo=UTC),
    )
    inputs = {**quarter_inputs, "suspects": suspects, "taskset": taskset}
    summary = write_quarter(tmp_path, quarter=QUARTER, **inputs)
    assert "unassigned" not in dict(pyogrio.list_layers(tmp_path / f"{QUARTER}.gpkg"))
    assert summary["warnings"] == []


def test_a_failed_write_leaves_the_earlier_outputs(written, quarter_inputs, monkeypatch):
    out, _ = written
    gpkg = out / f"{QUARTER}.gpkg"
    before = gpkg.read_bytes()
    listing = sorted(p.name for p in out.iterdir())

    def broken(layers):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline.export, "_layer_styles", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_quarter(out, quarter=QUARTER, **quarter_inputs)
    assert gpkg.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == listing  # no temporary files left behind


def test_unknown_language_is_refused(tmp_path, quarter_inputs):
    with pytest.raises(InputError, match="'fr'"):
        write_quarter(tmp_path, quarter=QUARTER, lang="fr", **quarter_inputs)


# --- evidence packs and image chips ------------------------------------------------------------


def chip_files(folder, taskset):
    """A before (grey) and after (white) JPEG per task, as pipeline.chips writes them."""
    chips = {}
    for task_id, code in zip(taskset.tasks["task_id"], taskset.tasks["office_code"], strict=True):
        paths = []
        for side, level in (("before", 90), ("after", 250)):
            path = folder / code / "chips" / f"{task_id}_{side}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (60, 60), (level, level, level)).save(path, format="JPEG")
            paths.append(path)
        chips[task_id] = Chip(paths[0], paths[1], "satellite", "drone")
    return chips


def test_html_evidence_pack_without_chips(written):
    out, _ = written
    for code in ("A", "B", "C"):
        assert worklist(out, code, "html").is_file()
    page = worklist(out, "A", "html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "甲街道（A）2024Q1 核查任务清单" in page
    assert page.count('<article class="card">') == 1 and "2024Q1-A-0001" in page
    assert page.count("无影像") == 2
    assert "新增建筑" in page and "400.0" in page
    assert all(zh in page for zh in RESULTS.values()) and all(
        zh in page for zh in DISPOSALS.values()
    )
    assert "http://" not in page and "https://" not in page and 'src="data:' not in page
    # text from the inputs is escaped
    b_page = worklist(out, "B", "html").read_text(encoding="utf-8")
    assert "=HYPERLINK(&quot;x&quot;)" in b_page and '=HYPERLINK("x")' not in b_page
    assert worklist(out, "C", "html").read_text(encoding="utf-8").count("<article") == 0


def test_chips_are_embedded_in_xlsx_and_html(tmp_path, quarter_inputs):
    out = tmp_path / QUARTER
    chips = chip_files(out / "worklists", quarter_inputs["taskset"])
    write_quarter(out, quarter=QUARTER, chips=chips, **quarter_inputs)
    sheet = openpyxl.load_workbook(worklist(out, "A", "xlsx")).active
    headers = [c.value for c in sheet[1]]
    assert headers == [*TASK_HEADERS.values(), "变化前影像", "变化后影像"]
    anchors = sorted((image.anchor._from.col, image.anchor._from.row) for image in sheet._images)
    first_image_col = len(TASK_HEADERS)  # zero-based column of 变化前影像
    assert anchors == [(first_image_col, 1), (first_image_col + 1, 1)]  # row 2 of the sheet
    assert sheet.row_dimensions[2].height > 100
    with zipfile.ZipFile(worklist(out, "A", "xlsx")) as archive:
        media = [i for i in archive.infolist() if i.filename.startswith("xl/media/")]
    # the chips go into the workbook as they are: JPEG, stored, not deflated again
    assert len(media) == 2 and all(i.filename.endswith(".jpeg") for i in media)
    assert all(i.compress_type == zipfile.ZIP_STORED for i in media)
    assert sheet.auto_filter.ref == f"A1:{openpyxl.utils.get_column_letter(len(headers))}2"

    page = worklist(out, "A", "html").read_text(encoding="utf-8")
    before = base64.b64encode(chips["2024Q1-A-0001"].before.read_bytes()).decode()
    assert f'src="data:image/jpeg;base64,{before}"' in page
    assert "变化前 · 卫星" in page and "变化后 · 无人机" in page
    english = tmp_path / "en"
    write_quarter(english, quarter=QUARTER, chips=chips, lang="en", **quarter_inputs)
    en_page = worklist(english, "A", "html").read_text(encoding="utf-8")
    assert "after · drone" in en_page and "illegal" in en_page and '<html lang="en">' in en_page
    assert [c.value for c in openpyxl.load_workbook(worklist(english, "A", "xlsx")).active[1]][
        -2:
    ] == ["before image", "after image"]


def test_due_date_column(written):
    out, _ = written
    sheet = openpyxl.load_workbook(worklist(out, "A", "xlsx")).active
    headers = [c.value for c in sheet[1]]
    due = sheet.cell(row=2, column=headers.index("办结期限") + 1)
    assert due.value == datetime(2024, 5, 31, 8, 30) and due.number_format == "yyyy-mm-dd"


# --- QGIS opens the styled GeoPackage ----------------------------------------------------------

_QGIS_CHECK = """
import json, sys
from qgis.core import QgsApplication, QgsVectorLayer


def describe(path, name):
    layer = QgsVectorLayer(path + "|layername=" + name, name, "ogr")
    fields = layer.fields()
    out = {
        "valid": layer.isValid(),
        "renderer": layer.renderer().type(),
        "aliases": {f.name(): layer.attributeAlias(i) for i, f in enumerate(fields)},
        "widgets": {f.name(): layer.editorWidgetSetup(i).type() for i, f in enumerate(fields)},
        "types": {f.name(): f.typeName() for f in fields},
        "crs": layer.crs().authid(),
    }
    if out["renderer"] == "RuleRenderer":
        out["rules"] = [r.filterExpression() for r in layer.renderer().rootRule().children()]
    return out


app = QgsApplication([], False)
app.initQgis()
names = ("tasks", "suspects", "offices", "clouds")
print(json.dumps({name: describe(sys.argv[1], name) for name in names}))
app.exitQgis()
"""


def _qgis_python():
    """A Python that can import PyQGIS (this one, or Debian's), or None."""
    for python in (sys.executable, "/usr/bin/python3"):
        if (
            Path(python).exists()
            and subprocess.run(
                [python, "-c", "import qgis.core"], capture_output=True, env=_qgis_env()
            ).returncode
            == 0
        ):
            return python
    return None


def _qgis_env():
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


@pytest.mark.skipif(_qgis_python() is None, reason="PyQGIS is not installed (Debian: qgis)")
def test_qgis_applies_the_default_styles(written):
    out, _ = written
    run = subprocess.run(
        [_qgis_python(), "-c", _QGIS_CHECK, str(out / f"{QUARTER}.gpkg")],
        capture_output=True,
        text=True,
        env=_qgis_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    layers = json.loads(run.stdout.strip().splitlines()[-1])
    tasks, suspects = layers["tasks"], layers["suspects"]
    assert all(layer["valid"] and layer["crs"] == GRID for layer in layers.values())
    assert suspects["renderer"] == "categorizedSymbol"
    assert layers["clouds"]["renderer"] == "singleSymbol"
    assert tasks["renderer"] == "RuleRenderer"
    assert any('"status"' in rule for rule in tasks["rules"])
    assert any('"priority"' in rule for rule in tasks["rules"])
    assert tasks["aliases"]["task_id"] == "任务编号" and tasks["aliases"]["result"] == "核查结果"
    assert tasks["widgets"]["result"] == "ValueMap" and tasks["widgets"]["status"] == "ValueMap"
    assert tasks["types"]["issued_at"].lower() == "datetime"


def test_sheets_written_on_worker_processes_are_those_written_in_process(
    tmp_path, written, quarter_inputs
):
    from pipeline.executors import Executor

    out, _ = written
    with Executor("processes", workers=2, progress=False) as executor:
        write_quarter(tmp_path / QUARTER, quarter=QUARTER, executor=executor, **quarter_inputs)
    for code in ("A", "B", "C"):
        stem = Path("worklists") / code / f"{code}_{QUARTER}"
        for suffix in (".csv", ".html"):
            name = stem.with_suffix(suffix)
            assert (tmp_path / QUARTER / name).read_bytes() == (out / name).read_bytes()
        sheets = [
            list(openpyxl.load_workbook(root / stem.with_suffix(".xlsx")).active.values)
            for root in (out, tmp_path / QUARTER)
        ]
        assert sheets[0] == sheets[1] and len(sheets[0]) >= 1
        gpkgs = [
            gpd.read_file(root / stem.with_suffix(".gpkg"), layer="tasks")
            for root in (out, tmp_path / QUARTER)
        ]
        pd.testing.assert_frame_equal(gpkgs[0], gpkgs[1])
    assert (tmp_path / QUARTER / "summary.json").read_text() == (out / "summary.json").read_text()
