"""Per office statistics from the register: counts, rates, overdue, key cases, rank, files."""

from __future__ import annotations

import unicodedata
import warnings
from datetime import UTC, datetime

import geopandas as gpd
import openpyxl
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner
from PIL import Image

import pipeline.stats
from cli import main
from errors import InputError
from pipeline.register import Register, read_register, update
from pipeline.stats import STATS_FIELDS, format_table, office_stats, write_stats

AS_OF = datetime(2024, 9, 1, tzinfo=UTC)
DUE_PAST, DUE_LATER = "2024-08-01", "2024-10-01"


def register(rows, *, offices=("A", "B", "C", "D", "E")):
    """rows: (office, quarter, result, closed, due, key_case) -> a Register in memory."""
    office, quarter, result, closed, due, key = zip(*rows, strict=True)
    n = len(rows)
    tasks = gpd.GeoDataFrame(
        {
            "task_id": [
                f"{q}-{o}-{i:04d}" for i, (q, o) in enumerate(zip(quarter, office, strict=True))
            ],
            "quarter": list(quarter),
            "office_code": list(office),
            "office_name": [f"{o}街道" for o in office],
            "result": pd.array(result, dtype="str"),
            "closed_at": pd.to_datetime(
                ["2024-07-01" if c else None for c in closed], utc=True
            ).astype("datetime64[ms, UTC]"),
            "due_at": pd.to_datetime(list(due), utc=True).astype("datetime64[ms, UTC]"),
            "key_case": list(key),
            "priority": 1,
        },
        geometry=[shapely.box(0, 0, 1, 1)] * n,
        crs="EPSG:4547",
    )
    return Register(
        tasks=tasks,
        history=pd.DataFrame(),
        offices=gpd.GeoDataFrame(
            {"office_code": list(offices), "office_name": [f"{o}街道" for o in offices]},
            geometry=[shapely.box(0, 0, 1, 1)] * len(offices),
            crs="EPSG:4547",
        ),
        quarters=pd.DataFrame({"quarter": ["Q1", "Q2"]}),
    )


ROWS = [
    # A: 4 issued, 3 verified, 2 closed, 1 overdue, 1 open key case
    ("A", "Q1", "illegal", True, DUE_PAST, True),
    ("A", "Q1", "legal", True, DUE_PAST, False),
    ("A", "Q1", "illegal", False, DUE_LATER, True),
    ("A", "Q1", None, False, DUE_PAST, False),
    # B: 2 issued, both verified and closed
    ("B", "Q1", "false_positive", True, DUE_PAST, False),
    ("B", "Q2", "illegal", True, DUE_LATER, True),
    # C: the rates of A, two overdue
    ("C", "Q1", "illegal", True, DUE_PAST, False),
    ("C", "Q1", "illegal", True, DUE_PAST, False),
    ("C", "Q1", "existing", False, DUE_PAST, False),
    ("C", "Q1", None, False, DUE_PAST, False),
    # D: exactly like A
    ("D", "Q1", "illegal", True, DUE_PAST, True),
    ("D", "Q1", "legal", True, DUE_PAST, False),
    ("D", "Q1", "illegal", False, DUE_LATER, True),
    ("D", "Q1", None, False, DUE_PAST, False),
]


def test_counts_rates_and_ranks():
    table = office_stats(register(ROWS), as_of=AS_OF)
    assert list(table.columns) == list(STATS_FIELDS)
    assert table["office_code"].tolist() == ["B", "A", "D", "C", "E"]
    rows = table.set_index("office_code")
    assert rows.loc[
        "A", ["issued", "verified", "closed", "overdue", "open_key_cases"]
    ].tolist() == [4, 3, 2, 1, 1]
    assert rows.loc["A", "verify_rate"] == 0.75 and rows.loc["A", "close_rate"] == 0.5
    assert rows.loc["B", ["verify_rate", "close_rate"]].tolist() == [1.0, 1.0]
    assert rows.loc["C", "overdue"] == 2
    assert rows["rank"].tolist() == [1, 2, 2, 4, pd.NA]
    assert rows.loc["E", "issued"] == 0 and pd.isna(rows.loc["E", "verify_rate"])
    assert rows.loc["A", "office_name"] == "A街道"


def test_one_quarter_and_the_deadline_date():
    q2 = office_stats(register(ROWS), quarter="Q2", as_of=AS_OF).set_index("office_code")
    assert q2["issued"].to_dict() == {"B": 1, "A": 0, "C": 0, "D": 0, "E": 0}
    early = office_stats(register(ROWS), as_of=datetime(2024, 7, 15, tzinfo=UTC))
    assert early["overdue"].sum() == 0
    with pytest.raises(
        InputError, match=r"quarter 'Q9' is not in the register \(quarters: Q1, Q2\)"
    ):
        office_stats(register(ROWS), quarter="Q9")


def test_files_in_chinese(tmp_path):
    table = office_stats(register(ROWS), as_of=AS_OF)
    csv, xlsx, png = write_stats(table, tmp_path, quarter="Q1", lang="zh")
    assert [p.name for p in (csv, xlsx, png)] == ["stats_Q1.csv", "stats_Q1.xlsx", "stats_Q1.png"]
    assert csv.read_bytes().startswith(b"\xef\xbb\xbf")
    frame = pd.read_csv(csv, encoding="utf-8-sig")
    assert list(frame.columns[:7]) == [
        "街道代码",
        "街道名称",
        "下发",
        "已核查",
        "核查率",
        "已办结",
        "办结率",
    ]
    assert frame["街道代码"].tolist() == ["B", "A", "D", "C", "E", "total"]
    total = frame.iloc[-1]
    assert (total["下发"], total["已核查"], total["已办结"]) == (14, 11, 8)
    assert total["核查率"] == pytest.approx(11 / 14, abs=1e-4)
    sheet = openpyxl.load_workbook(xlsx).active
    assert sheet["E2"].value == 1 and sheet["E2"].number_format == "0.0%"
    assert sheet.max_row == 7
    image = Image.open(png)
    assert image.format == "PNG" and image.width > 400


def test_the_chart_falls_back_to_english_without_a_cjk_font(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.stats, "_cjk_font", lambda: None)
    table = office_stats(register(ROWS), as_of=AS_OF)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph would warn
        write_stats(table, tmp_path, quarter=None, lang="zh")
    assert (tmp_path / "stats_all.png").is_file()


def test_printed_table_is_aligned():
    text = format_table(office_stats(register(ROWS), as_of=AS_OF), lang="zh")
    lines = text.splitlines()
    assert lines[0].split() == [
        "街道代码",
        "街道名称",
        "下发",
        "已核查",
        "核查率",
        "已办结",
        "办结率",
        "逾期未办结",
        "重点督办未办结",
        "排名",
    ]
    assert lines[2].split()[:7] == ["A", "A街道", "4", "3", "75.0%", "2", "50.0%"]
    assert lines[-1].split()[:2] == ["total", "全部街道"]

    def column(line, word):  # display column where ``word`` starts
        before = line[: line.index(word)]
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in before)

    rates = [column(line, line.split()[4]) for line in lines]
    assert len(set(rates)) == 1


def test_stats_command(tmp_path):
    path = tmp_path / "register.gpkg"
    update(path, lambda empty: register(ROWS))
    assert len(read_register(path).tasks) == len(ROWS)
    result = CliRunner().invoke(main, ["stats", "--register", str(path), "--lang", "en"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split()[:3] == ["office_code", "office_name", "issued"]
    assert (tmp_path / "stats" / "stats_all.csv").is_file()
    missing = CliRunner().invoke(main, ["stats", "--register", str(tmp_path / "none.gpkg")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
