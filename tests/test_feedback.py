"""Importing returned worklists: every format and language, every problem, all or nothing."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime

import geopandas as gpd
import numpy as np
import openpyxl
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from cli import main
from errors import InputError
from pipeline.export import write_quarter
from pipeline.feedback import ResultsError, import_results
from pipeline.register import read_register, record_quarter
from pipeline.tasks import build_tasks

GRID = "EPSG:4547"
X0, Y0 = 500_000.0, 2_500_000.0
TODAY = date(2024, 6, 1)


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A register with tasks Q1-A-0001, Q1-A-0002 and Q1-B-0001 (issued 2024-04-01), and the
    quarter's worklists in Chinese (``out/zh``) and English (``out/en``)."""
    tmp_path = tmp_path_factory.mktemp("issued")
    offices = gpd.GeoDataFrame(
        {"office_code": ["A", "B"], "office_name": ["甲街道", "乙街道"]},
        geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100)],
        crs=GRID,
    )
    geoms = [box(10, 10, 30, 30), box(50, 50, 60, 60), box(120, 10, 140, 30)]
    suspects = gpd.GeoDataFrame(
        {
            "suspect_id": ["a1", "a2", "b1"],
            "tile": "r0_c0",
            "change_type": ["new_building", "extension", "new_building"],
            "area_m2": shapely.area(np.asarray(geoms, dtype=object)),
            "height_gain_m": np.nan,
            "score": [0.9, 0.7, 0.8],
        },
        geometry=geoms,
        crs=GRID,
    )
    at = datetime(2024, 4, 1, tzinfo=UTC)
    taskset = build_tasks(suspects, offices, quarter="Q1", issued_at=at)
    register = tmp_path / "register.gpkg"
    taskset = record_quarter(
        register, taskset, quarter="Q1", before="E0", after="E1", offices=offices, run_at=at
    )
    tiles = gpd.GeoDataFrame({"tile": ["r0_c0"]}, geometry=[box(0, 0, 200, 100)], crs=GRID)
    for lang in ("zh", "en"):
        write_quarter(
            tmp_path / "out" / lang,
            quarter="Q1",
            suspects=suspects,
            taskset=taskset,
            offices=offices,
            tiles=tiles,
            lang=lang,
        )
    return tmp_path


@pytest.fixture
def issued(template, tmp_path):
    """A fresh copy of the template: (register, worklists folder)."""
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    return tmp_path / "register.gpkg", tmp_path / "out"


def worklist(out, code, ext, lang="zh"):
    return out / lang / "worklists" / code / f"{code}_Q1.{ext}"


def fill_xlsx(source, target, rows):
    """Write ``rows`` (list of {header: value}) over the data rows of a worklist, from row 2."""
    book = openpyxl.load_workbook(source)
    sheet = book.active
    headers = [c.value for c in sheet[1]]
    for n, cells in enumerate(rows, start=2):
        for title, value in cells.items():
            sheet.cell(row=n, column=headers.index(title) + 1, value=value)
    book.save(target)
    return target


def test_a_returned_chinese_xlsx_is_applied(tmp_path, issued):
    register, out = issued
    returned = fill_xlsx(
        worklist(out, "A", "xlsx"),
        tmp_path / "A_Q1.xlsx",
        [
            {
                "核查结果": "违法建设",
                "处置结果": "已拆除",
                "核查日期": datetime(2024, 4, 10),
                "办结日期": datetime(2024, 4, 20),
                "核查人": "张三",
                "备注": "'=已拆除",
            },
            {"核查结果": " 误报 ", "核查日期": "2024年4月12日"},
        ],
    )
    report = import_results([returned], register=register, by="李四", today=TODAY)
    assert report.files == 1 and report.rows == 2 and report.unchanged == 0
    assert sorted(report.updated) == ["Q1-A-0001", "Q1-A-0002"]
    reg = read_register(register)
    tasks = reg.tasks.set_index("task_id")
    first = tasks.loc["Q1-A-0001"]
    assert (first["result"], first["disposal"], first["status"]) == (
        "illegal",
        "demolished",
        "closed",
    )
    assert first["verified_at"] == pd.Timestamp("2024-04-10", tz="UTC")
    assert first["closed_at"] == pd.Timestamp("2024-04-20", tz="UTC")
    assert first["inspector"] == "张三" and first["note"] == "=已拆除"
    assert tasks.loc["Q1-A-0002", "result"] == "false_positive"
    assert tasks.loc["Q1-A-0002", "verified_at"] == pd.Timestamp("2024-04-12", tz="UTC")
    events = reg.history[reg.history["event"] == "returned"]
    assert events["recorded_by"].tolist() == ["李四", "李四"]
    assert events["source"].tolist() == [str(returned)] * 2
    assert events["row"].tolist() == [2, 3]
    # the same file again changes nothing
    again = import_results([returned], register=register, today=TODAY)
    assert again.updated == () and again.unchanged == 2
    assert len(read_register(register).history) == len(reg.history)


def test_an_english_csv_and_a_gb18030_csv(tmp_path, issued):
    register, out = issued
    csv = pd.read_csv(worklist(out, "B", "csv", lang="en"), encoding="utf-8-sig", dtype=str)
    csv.loc[0, ["result", "verified_at", "inspector"]] = ["Illegal", "2024/4/9", "Wang"]
    english = tmp_path / "B_Q1.csv"
    csv.to_csv(english, index=False, encoding="utf-8")
    assert import_results([english], register=register, today=TODAY).updated == ("Q1-B-0001",)

    zh = pd.read_csv(worklist(out, "A", "csv"), encoding="utf-8-sig", dtype=str)
    zh.loc[1, ["核查结果", "核查日期", "核查人"]] = ["合法建设", "2024-04-11", "赵六"]
    chinese = tmp_path / "A_Q1_returned.csv"
    zh.to_csv(chinese, index=False, encoding="gb18030")  # as Excel saves it on Chinese Windows
    assert import_results([chinese], register=register, today=TODAY).updated == ("Q1-A-0002",)
    tasks = read_register(register).tasks.set_index("task_id")
    assert tasks.loc["Q1-B-0001", "result"] == "illegal"
    assert tasks.loc["Q1-A-0002", ["result", "inspector"]].tolist() == ["legal", "赵六"]


def test_a_returned_geopackage(tmp_path, issued):
    register, out = issued
    layer = gpd.read_file(worklist(out, "A", "gpkg"), layer="tasks")
    layer.loc[layer["task_id"] == "Q1-A-0002", ["result", "inspector"]] = ["legal", "GIS"]
    layer["verified_at"] = pd.to_datetime(
        np.where(layer["task_id"] == "Q1-A-0002", "2024-04-15", None), utc=True
    )
    returned = tmp_path / "A_Q1.gpkg"
    layer.to_file(returned, layer="tasks")
    report = import_results([returned], register=register, today=TODAY)
    assert report.updated == ("Q1-A-0002",)
    events = read_register(register).history
    assert events["row"].iloc[-1] == 2  # the second feature


def test_every_problem_is_listed_and_nothing_is_applied(tmp_path, issued):
    register, out = issued
    before = register.read_bytes()
    bad = fill_xlsx(
        worklist(out, "A", "xlsx"),
        tmp_path / "A_Q1.xlsx",
        [
            {"核查结果": "违建", "核查日期": "someday"},  # row 2: Q1-A-0001
            {
                "核查结果": "合法建设",
                "核查日期": datetime(2024, 3, 1),  # row 3: before the issue,
                "办结日期": datetime(2024, 7, 1),
            },  # and in the future
            {"任务编号": "Q1-A-0009", "核查结果": "误报"},  # row 4: unknown
            {"任务编号": "Q1-B-0001", "核查结果": "误报"},  # row 5: another office's
            {"任务编号": "Q1-A-0001", "核查结果": "违法建设"},  # row 6
            {"任务编号": "Q1-A-0001", "核查结果": "合法建设"},  # row 7: differs from row 6
        ],
    )
    unverified = fill_xlsx(
        worklist(out, "B", "xlsx"),
        tmp_path / "B_Q1.xlsx",
        [
            {"办结日期": datetime(2024, 4, 20)},  # closed, never verified
        ],
    )
    plain = pd.read_csv(worklist(out, "A", "csv"), encoding="utf-8-sig", dtype=str)
    headless = tmp_path / "A_notes.csv"
    plain.drop(columns="任务编号").to_csv(headless, index=False)
    with pytest.raises(ResultsError) as info:
        import_results([bad, unverified, headless], register=register, today=TODAY)
    problems = info.value.problems
    expected = [
        f"{bad} row 2: 核查结果 (result) '违建' is not allowed",
        f"{bad} row 2: 核查日期 (verified_at) 'someday' is not a date",
        f"{bad} row 3: 核查日期 (verified_at) 2024-03-01 is before the task was issued (2024-04-01)",
        f"{bad} row 3: 办结日期 (closed_at) 2024-07-01 is in the future",
        f"{bad} row 4: unknown task Q1-A-0009",
        f"{bad} row 5: task Q1-B-0001 belongs to office B, not A",
        f"{bad} row 7: task Q1-A-0001 has 核查结果 (result) 'legal' but {bad} row 6 has 'illegal'",
        f"{unverified} row 2: task Q1-B-0001 has a 办结日期 (closed_at) but no 核查结果 (result) "
        "and no 核查日期 (verified_at); a task is verified before it is closed",
        f"{headless}: no 任务编号 / task_id column",
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for line, start in zip(problems, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert "nothing was applied" in str(info.value) and "\n" not in str(info.value)
    assert register.read_bytes() == before

    result = CliRunner().invoke(
        main,
        ["import-results", str(bad), str(unverified), str(headless), "--register", str(register)],
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    # the CLI checks against the real today, when 2024-07-01 is no longer in the future
    assert lines[:-1] == [p for p in problems if "in the future" not in p]
    assert lines[-1].startswith("tuban: error: 8 problem(s)")
    assert register.read_bytes() == before


def test_closed_before_verified_uses_the_register(tmp_path, issued):
    register, out = issued
    verified = fill_xlsx(
        worklist(out, "A", "xlsx"),
        tmp_path / "A_Q1.xlsx",
        [
            {"核查结果": "违法建设", "核查日期": datetime(2024, 4, 10)},
        ],
    )
    import_results([verified], register=register, today=TODAY)
    early = fill_xlsx(
        worklist(out, "A", "xlsx"),
        tmp_path / "A_Q1_closing.xlsx",
        [
            {"办结日期": datetime(2024, 4, 5)},
        ],
    )
    with pytest.raises(ResultsError, match="1 problem") as info:
        import_results([early], register=register, today=TODAY)
    assert "办结日期 (closed_at) before its 核查日期 (verified_at)" in info.value.problems[0]
    closing = fill_xlsx(
        worklist(out, "A", "xlsx"),
        tmp_path / "A_Q1_closed.xlsx",
        [
            {"处置结果": "已处罚", "办结日期": datetime(2024, 4, 25)},
        ],
    )
    assert import_results([closing], register=register, today=TODAY).updated == ("Q1-A-0001",)
    assert read_register(register).tasks.set_index("task_id").loc["Q1-A-0001", "status"] == "closed"


def test_the_office_comes_from_the_file_name_or_its_column(tmp_path, issued):
    register, out = issued
    csv = pd.read_csv(worklist(out, "B", "csv"), encoding="utf-8-sig", dtype=str)
    csv.loc[0, ["核查结果", "核查日期"]] = ["误报", "2024-04-09"]
    renamed = tmp_path / "returned.csv"
    csv.to_csv(renamed, index=False, encoding="utf-8-sig")
    assert import_results([renamed], register=register, today=TODAY).updated == ("Q1-B-0001",)
    anonymous = tmp_path / "anonymous.csv"
    csv.drop(columns="街道代码").assign(核查结果="合法建设").to_csv(anonymous, index=False)
    with pytest.raises(ResultsError) as info:
        import_results([anonymous], register=register, today=TODAY)
    assert info.value.problems == [
        f"{anonymous}: cannot tell which office returned it; keep the name "
        "<office_code>_<quarter>.csv or the 街道代码 column"
    ]


def test_unreadable_files_and_a_missing_register(tmp_path, issued):
    register, _ = issued
    broken = tmp_path / "A_Q1.xlsx"
    broken.write_text("not a workbook")
    with pytest.raises(ResultsError) as info:
        import_results([broken, tmp_path / "gone.csv", tmp_path / "A.pdf"], register=register)
    assert [p.split(": ", 1)[1].split(" (")[0].split(";")[0] for p in info.value.problems] == [
        "cannot be read",
        "file not found",
        "not a .xlsx, .csv or .gpkg file",
    ]
    with pytest.raises(InputError, match="does not exist"):
        import_results([broken], register=tmp_path / "none.gpkg")
