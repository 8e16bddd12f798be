"""The task register: recording quarters, re-runs, links to earlier tasks, atomic updates."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from city import box as city_box
from city import fill_worklist, quarter, write_city, write_suspects
from click.testing import CliRunner

from cli import main
from errors import InputError, TubanError
from pipeline import batch
from pipeline.register import (
    REGISTER_FIELDS,
    apply_results,
    earlier_tasks,
    read_register,
    record_quarter,
    update,
)
from pipeline.stats import office_stats
from pipeline.tasks import build_tasks

GRID = "EPSG:4547"
X0, Y0 = 500_000.0, 2_500_000.0
Q1_AT = datetime(2024, 4, 1, tzinfo=UTC)
Q2_AT = datetime(2024, 7, 1, tzinfo=UTC)


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


OFFICES = gpd.GeoDataFrame(
    {"office_code": ["A", "B"], "office_name": ["甲街道", "乙街道"]},
    geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100)],
    crs=GRID,
)


def suspects(rows):
    ids, geoms, types, scores = zip(*rows, strict=True)
    return gpd.GeoDataFrame(
        {
            "suspect_id": list(ids),
            "tile": "r0_c0",
            "change_type": list(types),
            "area_m2": shapely.area(np.asarray(geoms, dtype=object)),
            "height_gain_m": np.nan,
            "score": list(scores),
        },
        geometry=list(geoms),
        crs=GRID,
    )


Q1_SUSPECTS = [
    ("a1", box(10, 10, 30, 30), "new_building", 0.9),
    ("a2", box(50, 50, 60, 60), "extension", 0.7),
    ("b1", box(120, 10, 140, 30), "new_building", 0.8),
]


def issue(path, quarter, rows, *, at, before="E0", after="E1"):
    """Build a quarter's tasks against the register at ``path`` and record them."""
    earlier = earlier_tasks(read_register(path, missing_ok=True), quarter=quarter)
    taskset = build_tasks(suspects(rows), OFFICES, quarter=quarter, earlier=earlier, issued_at=at)
    return record_quarter(
        path,
        taskset,
        quarter=quarter,
        before=before,
        after=after,
        offices=OFFICES,
        run_at=at,
        by="analyst",
    )


def results(rows):
    """rows: (task_id, result, verified, closed) -> what offices return, typed as the register."""
    ids, result, verified, closed = zip(*rows, strict=True)
    day = lambda values: pd.to_datetime(list(values), utc=True).astype("datetime64[ms, UTC]")  # noqa: E731
    return pd.DataFrame(
        {
            "task_id": list(ids),
            "result": pd.array(result, dtype="str"),
            "disposal": pd.array([None] * len(ids), dtype="str"),
            "verified_at": day(verified),
            "closed_at": day(closed),
            "inspector": pd.array(["王五"] * len(ids), dtype="str"),
            "note": pd.array([None] * len(ids), dtype="str"),
            "source": "returned.xlsx",
            "row": pd.array(range(2, len(ids) + 2), dtype="Int64"),
        }
    )


def test_a_first_quarter_creates_the_register(tmp_path):
    path = tmp_path / "register.gpkg"
    taskset = issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    assert taskset.tasks["task_id"].tolist() == ["Q1-A-0001", "Q1-A-0002", "Q1-B-0001"]
    layers = dict(pyogrio.list_layers(path))
    assert {"tasks", "offices", "status_history", "quarters", "layer_styles"} <= set(layers)
    register = read_register(path)
    assert list(register.tasks.columns) == [*REGISTER_FIELDS, "geometry"]
    assert register.tasks.crs.to_epsg() == 4547
    assert (register.tasks["status"] == "issued").all()
    assert (register.tasks["last_seen"] == "Q1").all()
    history = register.history
    assert history[["task_id", "event", "suspect_id"]].values.tolist() == [
        ["Q1-A-0001", "issued", "a1"],
        ["Q1-A-0002", "issued", "a2"],
        ["Q1-B-0001", "issued", "b1"],
    ]
    assert (history["recorded_by"] == "analyst").all()
    assert (history["recorded_at"] == pd.Timestamp(Q1_AT)).all()
    assert register.quarters[["quarter", "before", "after"]].values.tolist() == [["Q1", "E0", "E1"]]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        styled = {r[0] for r in db.execute("SELECT f_table_name FROM layer_styles")}
    assert styled == {"tasks", "offices"}
    assert not (tmp_path / "register.gpkg.lock").exists()


def test_rerunning_a_quarter_keeps_ids_times_and_results_without_duplicates(tmp_path):
    path = tmp_path / "register.gpkg"
    issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    update(
        path,
        lambda r: apply_results(
            r, results([("Q1-A-0002", "legal", "2024-04-10", None)]), at=Q2_AT, by="office A"
        ),
    )
    later = datetime(2024, 4, 3, tzinfo=UTC)
    again = issue(path, "Q1", Q1_SUSPECTS, at=later)
    register = read_register(path)
    assert register.tasks["task_id"].tolist() == ["Q1-A-0001", "Q1-A-0002", "Q1-B-0001"]
    assert (register.tasks["issued_at"] == pd.Timestamp(Q1_AT)).all()
    returned = again.tasks.set_index("task_id")
    assert returned.loc["Q1-A-0002", "result"] == "legal"
    assert returned.loc["Q1-A-0002", "status"] == "verified"
    assert (returned["issued_at"] == pd.Timestamp(Q1_AT)).all()
    assert register.history["event"].tolist() == ["issued", "issued", "issued", "returned"]
    assert register.quarters["first_issued_at"].tolist() == [pd.Timestamp(Q1_AT)]
    assert register.quarters["last_run_at"].tolist() == [pd.Timestamp(later)]


def test_a_rerun_drops_tasks_that_went_away_unless_an_office_worked_on_them(tmp_path):
    path = tmp_path / "register.gpkg"
    issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    update(
        path,
        lambda r: apply_results(
            r, results([("Q1-B-0001", "illegal", "2024-04-10", None)]), at=Q2_AT
        ),
    )
    issue(path, "Q1", Q1_SUSPECTS[:1], at=Q1_AT)  # a2 and b1 are no longer detected
    register = read_register(path)
    assert register.tasks["task_id"].tolist() == ["Q1-A-0001", "Q1-B-0001"]
    issued = register.history[register.history["event"] == "issued"]
    assert issued["task_id"].tolist() == ["Q1-A-0001", "Q1-B-0001"]


def test_a_later_quarter_links_to_earlier_tasks(tmp_path):
    path = tmp_path / "register.gpkg"
    issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    update(
        path,
        lambda r: apply_results(
            r,
            results(
                [
                    ("Q1-A-0002", "illegal", "2024-04-10", None),
                    ("Q1-B-0001", "illegal", "2024-04-10", "2024-05-01"),
                ]
            ),
            at=Q2_AT,
        ),
    )
    q2 = [
        ("c1", box(11, 11, 31, 31), "extension", 0.8),  # at Q1-A-0001, open: still present
        ("c2", box(50, 50, 60, 60), "demolition", 0.8),  # Q1-A-0002 verified illegal: demolished
        ("c3", box(120, 10, 140, 30), "new_building", 0.6),  # Q1-B-0001 closed: built again
    ]
    taskset = issue(path, "Q2", q2, at=Q2_AT, before="E1", after="E2")
    assert taskset.tasks[["task_id", "prior_task_id", "key_case"]].values.tolist() == [
        ["Q2-B-0001", "Q1-B-0001", True]
    ]
    register = read_register(path)
    events = register.history[register.history["quarter"] == "Q2"]
    assert events[["task_id", "event", "suspect_id"]].values.tolist() == [
        ["Q2-B-0001", "issued", "c3"],
        ["Q1-A-0001", "still_present", "c1"],
        ["Q1-A-0002", "demolition_observed", "c2"],
    ]
    tasks = register.tasks.set_index("task_id")
    assert tasks["last_seen"].to_dict() == {
        "Q1-A-0001": "Q2",
        "Q1-A-0002": "Q1",
        "Q1-B-0001": "Q1",
        "Q2-B-0001": "Q2",
    }
    assert tasks.loc["Q1-A-0002", "demolition_observed"] == "Q2"
    assert tasks["status"].to_dict() == {
        "Q1-A-0001": "issued",
        "Q1-A-0002": "verified",
        "Q1-B-0001": "closed",
        "Q2-B-0001": "issued",
    }
    # re-running Q2 changes nothing, and Q1 tasks stay the earlier ones
    issue(path, "Q2", q2, at=Q2_AT, before="E1", after="E2")
    rerun = read_register(path)
    assert len(rerun.history) == len(register.history) and len(rerun.tasks) == 4
    assert earlier_tasks(rerun, quarter="Q2")["quarter"].unique().tolist() == ["Q1"]
    assert earlier_tasks(rerun, quarter="Q3")["quarter"].unique().tolist() == ["Q1", "Q2"]


def test_apply_results_records_only_changes(tmp_path):
    path = tmp_path / "register.gpkg"
    issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    returned = results([("Q1-A-0001", "illegal", "2024-04-10", None)])
    update(path, lambda r: apply_results(r, returned, at=Q2_AT, by="office A"))
    update(path, lambda r: apply_results(r, returned, at=Q2_AT, by="office A"))
    # a blank cell keeps the registered value
    blank = returned.assign(
        result=pd.array([None], dtype="str"), closed_at=pd.Timestamp("2024-04-20", tz="UTC")
    )
    update(path, lambda r: apply_results(r, blank, at=Q2_AT, by="office A"))
    register = read_register(path)
    events = register.history[register.history["event"] == "returned"]
    assert len(events) == 2
    assert events["recorded_by"].tolist() == ["office A", "office A"]
    assert events["source"].tolist() == ["returned.xlsx", "returned.xlsx"]
    assert events["row"].tolist() == [2, 2]
    task = register.tasks.set_index("task_id").loc["Q1-A-0001"]
    assert task["result"] == "illegal" and task["status"] == "closed"
    assert task["closed_at"] == pd.Timestamp("2024-04-20", tz="UTC")
    assert task["inspector"] == "王五"


def test_a_failed_update_leaves_the_register_and_no_lock(tmp_path):
    path = tmp_path / "register.gpkg"
    issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    before = path.read_bytes()

    def broken(register):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        update(path, broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["register.gpkg"]


def test_a_held_lock_refuses_a_second_writer(tmp_path):
    path = tmp_path / "register.gpkg"
    issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    before = path.read_bytes()
    lock = tmp_path / "register.gpkg.lock"
    lock.write_text("pid 123 on host since 2024-04-01")
    with pytest.raises(TubanError, match=r"being updated by another tuban \(pid 123") as info:
        issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    assert "\n" not in str(info.value) and str(lock) in str(info.value)
    assert path.read_bytes() == before and lock.exists()


def test_files_that_are_not_registers_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_register(tmp_path / "none.gpkg")
    assert read_register(tmp_path / "none.gpkg", missing_ok=True).tasks.empty
    other = tmp_path / "offices.gpkg"
    OFFICES.to_file(other)
    with pytest.raises(InputError, match="not a tuban register"):
        read_register(other)
    text = tmp_path / "x.gpkg"
    text.write_text("nonsense")
    with pytest.raises(InputError, match="not a GeoPackage"):
        read_register(text)


# --- the whole loop ----------------------------------------------------------------------------


def test_the_whole_loop(tmp_path):
    """Quarter 1 → worklists → returned xlsx → import → stats → quarter 2 links, not re-issues."""
    write_city(tmp_path)
    q1 = quarter(tmp_path, "q1")
    for epoch in ("E0", "E1"):
        batch.ingest(q1, epoch)
    write_suspects(
        q1,
        [
            ("s1", city_box(5, 5, 15, 15), "new_building", 0.9),
            ("s2", city_box(20, 5, 30, 15), "extension", 0.8),
            ("s3", city_box(5, 30, 15, 40), "new_building", 0.7),
            ("s4", city_box(35, 35, 50, 50), "land_clearing", 0.6),
            ("x1", city_box(70, 5, 85, 20), "new_building", 0.9),
            ("x2", city_box(100, 30, 115, 45), "extension", 0.7),
        ],
    )
    taskset, summary = batch.worklists(q1, issued_at=datetime(2024, 7, 1, tzinfo=UTC))
    ids = dict(zip(taskset.tasks["suspect_id"], taskset.tasks["task_id"], strict=True))
    assert summary["totals"]["tasks"] == 6
    folder = tmp_path / "out" / "E1" / "worklists"
    assert all(
        (folder / code / f"{code}_E1.{ext}").is_file()
        for code in ("AT", "XQ")
        for ext in ("gpkg", "csv", "xlsx", "html")
    )
    assert len(list((folder / "AT" / "chips").glob("*.jpg"))) == 8

    # the offices fill in their worklists and send them back
    verified, closed = datetime(2024, 7, 10), datetime(2024, 7, 20)
    at = fill_worklist(
        folder / "AT" / "AT_E1.xlsx",
        tmp_path / "AT_E1 填报.xlsx",
        {
            ids["s1"]: {
                "核查结果": "违法建设",
                "处置结果": "已拆除",
                "核查日期": verified,
                "办结日期": closed,
                "核查人": "张三",
            },
            ids["s2"]: {"核查结果": "违法建设", "核查日期": verified, "核查人": "张三"},
            ids["s3"]: {"核查结果": "误报", "核查日期": verified, "办结日期": closed},
        },
    )
    xq = fill_worklist(
        folder / "XQ" / "XQ_E1.xlsx",
        tmp_path / "XQ_E1.xlsx",
        {
            ids["x1"]: {
                "核查结果": "违法建设",
                "处置结果": "已处罚",
                "核查日期": verified,
                "办结日期": closed,
                "备注": "罚款 5000 元",
            },
        },
    )
    register = tmp_path / "register.gpkg"
    runner = CliRunner()
    done = runner.invoke(
        main, ["import-results", str(at), str(xq), "--register", str(register), "--by", "城管局"]
    )
    assert done.exit_code == 0, done.output
    assert "4 tasks updated" in done.output

    # the rates are the simulated ones
    table = office_stats(
        read_register(register), quarter="E1", as_of=datetime(2024, 9, 1, tzinfo=UTC)
    ).set_index("office_code")
    assert table.loc["AT", ["issued", "verified", "closed", "overdue"]].tolist() == [4, 3, 2, 2]
    assert table.loc["AT", "verify_rate"] == 0.75 and table.loc["AT", "close_rate"] == 0.5
    assert table.loc["XQ", ["issued", "verified", "closed", "overdue"]].tolist() == [2, 1, 1, 1]
    assert table.loc["XQ", "verify_rate"] == 0.5 and table.loc["XQ", "close_rate"] == 0.5
    assert table["rank"].tolist() == [1, 2]  # AT: same 办结率, higher 核查率
    shown = runner.invoke(
        main,
        ["stats", "--register", str(register), "--quarter", "E1", "--out", str(tmp_path / "stats")],
    )
    assert shown.exit_code == 0, shown.output
    assert "75.0%" in shown.output and (tmp_path / "stats" / "stats_E1.png").is_file()
    history = read_register(register).history
    returned = history[history["event"] == "returned"]
    assert set(returned["recorded_by"]) == {"城管局"} and len(returned) == 4
    assert returned["source"].str.endswith(("AT_E1 填报.xlsx", "XQ_E1.xlsx")).all()
    note = read_register(register).tasks.set_index("task_id").loc[ids["x1"], "note"]
    assert note == "罚款 5000 元"

    # quarter 2: persisting suspects are linked, not issued again
    q2 = quarter(tmp_path, "q2")
    batch.ingest(q2, "E2")
    write_suspects(
        q2,
        [
            ("p4", city_box(36, 36, 50, 50), "extension", 0.7),  # s4: open, still there
            ("d2", city_box(20, 5, 30, 15), "demolition", 0.8),  # s2: illegal, now demolished
            ("r1", city_box(70, 5, 85, 20), "new_building", 0.6),  # x1: closed, built again
            ("n1", city_box(100, 50, 110, 60), "new_building", 0.8),  # new
        ],
    )
    second, summary2 = batch.worklists(q2, issued_at=datetime(2024, 10, 1, tzinfo=UTC))
    assert sorted(second.tasks["suspect_id"]) == ["n1", "r1"]
    linked = second.tasks.set_index("suspect_id")
    assert linked.loc["r1", "prior_task_id"] == ids["x1"] and linked.loc["r1", "key_case"]
    assert summary2["suppressed"]["by_reason"]["persisting"] == 1
    assert summary2["suppressed"]["by_reason"]["demolition_observed"] == 1
    final = read_register(register)
    assert final.tasks["task_id"].is_unique and len(final.tasks) == 8
    tasks = final.tasks.set_index("task_id")
    assert tasks.loc[ids["s4"], "last_seen"] == "E2"
    assert tasks.loc[ids["s2"], "demolition_observed"] == "E2"
    events = final.history[final.history["quarter"] == "E2"].set_index("suspect_id")["event"]
    assert events.to_dict() == {
        "r1": "issued",
        "n1": "issued",
        "p4": "still_present",
        "d2": "demolition_observed",
    }


def test_ids_keep_their_meaning_when_results_change_a_rerun(tmp_path):
    path = tmp_path / "register.gpkg"
    issue(path, "Q1", Q1_SUSPECTS, at=Q1_AT)
    q2 = [
        ("c1", box(11, 11, 31, 31), "extension", 0.8),  # at Q1-A-0001 (open): persisting
        ("c2", box(70, 70, 80, 80), "new_building", 0.5),
        ("c3", box(150, 50, 170, 70), "new_building", 0.9),
    ]
    first = issue(path, "Q2", q2, at=Q2_AT)
    assert dict(zip(first.tasks["suspect_id"], first.tasks["task_id"], strict=True)) == {
        "c2": "Q2-A-0001",
        "c3": "Q2-B-0001",
    }
    # Q1-A-0001 is closed before Q2 is run again: c1 is now a new case, after the others
    returned = results([("Q1-A-0001", "illegal", "2024-04-10", "2024-05-01")])
    update(path, lambda r: apply_results(r, returned, at=Q2_AT))
    again = issue(path, "Q2", q2, at=datetime(2024, 7, 2, tzinfo=UTC))
    ids = dict(zip(again.tasks["suspect_id"], again.tasks["task_id"], strict=True))
    assert ids == {"c1": "Q2-A-0002", "c2": "Q2-A-0001", "c3": "Q2-B-0001"}
    tasks = read_register(path).tasks.set_index("task_id")
    assert tasks.loc["Q2-A-0002", "prior_task_id"] == "Q1-A-0001"
    assert tasks.loc["Q2-A-0001", "issued_at"] == pd.Timestamp(Q2_AT)
    assert again.tasks["task_id"].tolist() == ["Q2-A-0001", "Q2-A-0002", "Q2-B-0001"]
