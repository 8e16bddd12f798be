"""Tasks from suspects (permits, offices, priority, IDs), the vector readers and the vocabulary."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta, timezone

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio.crs
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from errors import ConfigError, InputError
from pipeline.tasks import TASK_FIELDS, TaskRules, build_tasks
from pipeline.vectors import is_safe_code, read_offices, read_permits
from pipeline.vocab import CHANGE_TYPES, HEADER_FIELDS, RESULTS, TASK_HEADERS, accepted, label

GRID = "EPSG:4547"  # CGCS2000 / 3-degree Gauss-Kruger CM 114E
X0, Y0 = 500_000.0, 2_500_000.0
ISSUED = datetime(2024, 4, 1, 8, 0, tzinfo=UTC)


def box(x0, y0, x1, y1):
    """A box in metres relative to (X0, Y0)."""
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def offices_ab(crs=GRID):
    """Office A covers x 0-100, office B x 100-200 (y 0-100)."""
    frame = gpd.GeoDataFrame(
        {"office_code": ["A", "B"], "office_name": ["甲街道", "乙街道"]},
        geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100)],
        crs=GRID,
    )
    return frame.to_crs(crs)


def suspects(rows):
    """rows: (suspect_id, geometry, change_type, score)."""
    ids, geoms, types, scores = zip(*rows, strict=True) if rows else ((), (), (), ())
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


def permits(rows):
    ids, geoms = zip(*rows, strict=True)
    return gpd.GeoDataFrame({"permit_id": list(ids)}, geometry=list(geoms), crs=GRID)


def bucket_of(taskset):
    out = {}
    for name in ("tasks", "suppressed", "unassigned"):
        for sid in getattr(taskset, name)["suspect_id"]:
            assert sid not in out, f"{sid} in two buckets"
            out[sid] = name
    return out


# --- permits and minimum area ------------------------------------------------------------------


def test_suspect_mostly_inside_a_permit_is_suppressed_with_its_id():
    s = suspects(
        [
            ("in", box(10, 10, 20, 20), "new_building", 0.9),  # 80 % inside P7
            ("half_out", box(40, 10, 50, 20), "new_building", 0.9),  # 30 % inside P8
        ]
    )
    p = permits([("P7", box(12, 0, 30, 30)), ("P8", box(47, 0, 60, 30))])
    ts = build_tasks(s, offices_ab(), quarter="2024Q1", permits=p, issued_at=ISSUED)
    assert ts.suppressed["suspect_id"].tolist() == ["in"]
    assert ts.suppressed["reason"].tolist() == ["permit:P7"]
    assert ts.suppressed["office_code"].tolist() == ["A"]
    assert ts.tasks["suspect_id"].tolist() == ["half_out"]


def test_permit_share_uses_the_union_of_overlapping_permits():
    s = suspects([("s", box(0, 40, 10, 50), "extension", 0.8)])
    # two identical permits over 30 % of the suspect: 30 %, not 60 %
    twice = permits([("P1", box(0, 40, 3, 50)), ("P2", box(0, 40, 3, 50))])
    assert (
        len(build_tasks(s, offices_ab(), quarter="Q", permits=twice, issued_at=ISSUED).tasks) == 1
    )
    # two permits side by side cover 60 %: suppressed, for the one covering most (P4: 40 %)
    side = permits([("P3", box(0, 40, 2, 50)), ("P4", box(2, 40, 6, 50))])
    ts = build_tasks(s, offices_ab(), quarter="Q", permits=side, issued_at=ISSUED)
    assert ts.suppressed["reason"].tolist() == ["permit:P4"]


def test_permit_overlap_threshold_is_a_rule():
    s = suspects([("s", box(0, 40, 10, 50), "extension", 0.8)])
    p = permits([("P1", box(0, 40, 3, 50))])  # 30 %
    strict = build_tasks(
        s,
        offices_ab(),
        quarter="Q",
        permits=p,
        rules=TaskRules(permit_overlap=0.25),
        issued_at=ISSUED,
    )
    assert strict.suppressed["reason"].tolist() == ["permit:P1"]


def test_small_suspects_are_suppressed_and_permit_reason_wins():
    s = suspects(
        [
            ("tiny", box(10, 10, 14, 14), "new_building", 0.9),  # 16 m²
            ("tiny_permitted", box(60, 10, 64, 14), "new_building", 0.9),
            ("ok", box(30, 30, 40, 40), "new_building", 0.9),
        ]
    )
    p = permits([("P1", box(55, 5, 70, 20))])
    ts = build_tasks(s, offices_ab(), quarter="Q", permits=p, issued_at=ISSUED)
    reasons = dict(zip(ts.suppressed["suspect_id"], ts.suppressed["reason"], strict=True))
    assert reasons == {"tiny": "below_min_area", "tiny_permitted": "permit:P1"}
    assert ts.tasks["suspect_id"].tolist() == ["ok"]


def test_suspects_under_cloud_or_on_water_are_suppressed_and_permit_reason_wins():
    s = suspects(
        [
            ("clouded", box(10, 10, 20, 20), "other", 0.9),  # 60 % under the cloud
            ("cloud_edge", box(30, 10, 40, 20), "other", 0.9),  # 20 % under it
            ("boat", box(10, 60, 20, 70), "other", 0.9),
            ("clouded_permitted", box(60, 10, 70, 20), "new_building", 0.9),
            ("ok", box(10, 80, 20, 90), "new_building", 0.9),
        ]
    )
    s["water_share"] = [0.0, 0.0, 0.8, 0.0, 0.4]
    clouds = gpd.GeoDataFrame(
        {"area_m2": [0.0, 0.0]}, geometry=[box(14, 0, 32, 30), box(55, 0, 75, 30)], crs=GRID
    ).to_crs("EPSG:4326")  # any CRS
    p = permits([("P1", box(55, 5, 75, 25))])
    ts = build_tasks(s, offices_ab(), quarter="Q", permits=p, clouds=clouds, issued_at=ISSUED)
    reasons = dict(zip(ts.suppressed["suspect_id"], ts.suppressed["reason"], strict=True))
    assert reasons == {"clouded": "cloud", "boat": "water", "clouded_permitted": "permit:P1"}
    assert ts.tasks["suspect_id"].tolist() == ["ok", "cloud_edge"]
    strict = build_tasks(
        s,
        offices_ab(),
        quarter="Q",
        clouds=clouds,
        rules=TaskRules(cloud_overlap=0.1, water_share=0.3),
        issued_at=ISSUED,
    )
    assert set(strict.tasks["suspect_id"]) == set()
    assert dict(zip(strict.suppressed["suspect_id"], strict.suppressed["reason"], strict=True)) == {
        "clouded": "cloud",
        "cloud_edge": "cloud",
        "boat": "water",
        "clouded_permitted": "cloud",
        "ok": "water",
    }


# --- offices -----------------------------------------------------------------------------------


def test_each_suspect_goes_to_the_office_it_overlaps_most():
    s = suspects(
        [
            ("in_a", box(10, 10, 30, 30), "new_building", 0.9),
            ("straddle", box(90, 50, 130, 60), "extension", 0.8),  # 10 m in A, 30 m in B
            ("far", box(500, 0, 520, 20), "other", 0.5),
            ("touching", box(200, 10, 210, 20), "other", 0.5),  # shares only an edge with B
        ]
    )
    ts = build_tasks(s, offices_ab(), quarter="2024Q1", issued_at=ISSUED)
    office = dict(zip(ts.tasks["suspect_id"], ts.tasks["office_code"], strict=True))
    assert office == {"in_a": "A", "straddle": "B"}
    assert sorted(ts.unassigned["suspect_id"]) == ["far", "touching"]
    assert ts.tasks.set_index("suspect_id").loc["straddle", "office_name"] == "乙街道"
    # the straddling polygon is kept whole
    assert ts.tasks.set_index("suspect_id").loc["straddle", "geometry"].area == pytest.approx(400)


def test_offices_in_another_crs_are_reprojected():
    s = suspects([("s", box(150, 40, 170, 60), "new_building", 0.9)])
    ts = build_tasks(s, offices_ab(crs="EPSG:4490"), quarter="Q", issued_at=ISSUED)
    assert ts.tasks["office_code"].tolist() == ["B"]
    assert ts.tasks.crs == s.crs


# --- priority, key cases, IDs ------------------------------------------------------------------


def test_priority_and_key_case_known_answers():
    s = suspects(
        [
            ("nb200", box(0, 0, 20, 10), "new_building", 0.85),  # urgency 0.65 -> 1
            ("ext100", box(30, 0, 40, 10), "extension", 0.7),  # 0.42 -> 2
            ("dem50", box(50, 0, 60, 5), "demolition", 0.5),  # 0.14 -> 3
            ("big", box(0, 50, 40, 80), "other", 0.1),  # 1200 m² -> key case
            ("sure_nb", box(60, 50, 66, 55), "new_building", 0.95),  # 30 m², score -> key case
        ]
    )
    ts = build_tasks(s, offices_ab(), quarter="Q", issued_at=ISSUED).tasks.set_index("suspect_id")
    assert ts["priority"].to_dict() == {"nb200": 1, "ext100": 2, "dem50": 3, "big": 1, "sure_nb": 1}
    assert ts["key_case"].to_dict() == {
        "nb200": False,
        "ext100": False,
        "dem50": False,
        "big": True,
        "sure_nb": True,
    }


def test_ids_follow_priority_then_position_and_are_stable():
    rows = [
        ("low", box(10, 10, 20, 15), "demolition", 0.5),  # priority 3
        ("high", box(10, 60, 40, 90), "new_building", 0.95),  # priority 1
        # two equal priority-2 tasks: the northern one first
        ("south", box(60, 10, 70, 20), "extension", 0.7),
        ("north", box(60, 40, 70, 50), "extension", 0.7),
        # same y as north, further east: after north
        ("east", box(80, 40, 90, 50), "extension", 0.7),
        ("b", box(150, 10, 170, 30), "new_building", 0.9),
    ]
    first = build_tasks(suspects(rows), offices_ab(), quarter="2024Q1", issued_at=ISSUED).tasks
    ids = dict(zip(first["suspect_id"], first["task_id"], strict=True))
    assert ids == {
        "high": "2024Q1-A-0001",
        "north": "2024Q1-A-0002",
        "east": "2024Q1-A-0003",
        "south": "2024Q1-A-0004",
        "low": "2024Q1-A-0005",
        "b": "2024Q1-B-0001",
    }
    a = first[first["office_code"] == "A"]
    assert a["priority"].is_monotonic_increasing
    rerun = build_tasks(
        suspects(rows[::-1]), offices_ab(), quarter="2024Q1", issued_at=ISSUED
    ).tasks
    assert dict(zip(rerun["suspect_id"], rerun["task_id"], strict=True)) == ids


def test_task_fields_lon_lat_and_issue_time():
    s = suspects([("s", box(40, 40, 60, 60), "new_building", 0.9)])
    shanghai = timezone(timedelta(hours=8))
    ts = build_tasks(
        s,
        offices_ab(),
        quarter="2024Q1",
        issued_at=datetime(2024, 4, 1, 16, 0, 0, 123456, tzinfo=shanghai),
    )
    tasks = ts.tasks
    assert list(tasks.columns) == [*TASK_FIELDS, "geometry"]
    row = tasks.iloc[0]
    assert (row["x"], row["y"]) == (X0 + 50, Y0 + 50)
    lon, lat = Transformer.from_crs(GRID, "EPSG:4490", always_xy=True).transform(X0 + 50, Y0 + 50)
    assert row["lon"] == pytest.approx(lon, abs=1e-7)
    assert row["lat"] == pytest.approx(lat, abs=1e-7)
    assert 113.9 < row["lon"] < 114.1 and 22 < row["lat"] < 23.5  # east of CM 114E, near 22.6N
    assert str(tasks["issued_at"].dtype) == "datetime64[ms, UTC]"
    assert row["issued_at"].isoformat() == "2024-04-01T08:00:00.123000+00:00"
    assert row["quarter"] == "2024Q1" and row["area_m2"] == 400 and np.isnan(row["height_gain_m"])
    for field in (
        "prior_task_id",
        "result",
        "disposal",
        "verified_at",
        "closed_at",
        "inspector",
        "note",
    ):
        assert tasks[field].isna().all(), field


def test_empty_suspects_give_empty_frames_with_all_fields():
    ts = build_tasks(suspects([]), offices_ab(), quarter="Q", issued_at=ISSUED)
    assert ts.tasks.empty and ts.suppressed.empty and ts.unassigned.empty
    assert list(ts.tasks.columns) == [*TASK_FIELDS, "geometry"]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-50, 250),
            st.integers(-20, 110),
            st.integers(1, 40),
            st.integers(1, 40),
            st.sampled_from(list(CHANGE_TYPES)),
            st.floats(0, 1),
        ),
        max_size=25,
    )
)
def test_every_suspect_lands_in_exactly_one_bucket_with_contiguous_ids(boxes):
    rows = [
        (f"s{i}", box(x, y, x + w, y + h), kind, score)
        for i, (x, y, w, h, kind, score) in enumerate(boxes)
    ]
    p = permits([("P1", box(0, 0, 30, 30))])
    ts = build_tasks(suspects(rows), offices_ab(), quarter="Q1", permits=p, issued_at=ISSUED)
    assert sorted(bucket_of(ts)) == sorted(r[0] for r in rows)
    for code, group in ts.tasks.groupby("office_code"):
        numbers = group["task_id"].str.rsplit("-", n=1).str[1].astype(int)
        assert sorted(numbers) == list(range(1, len(group) + 1))
        assert group["task_id"].str.startswith(f"Q1-{code}-").all()
    assert (ts.tasks["area_m2"] >= TaskRules().min_area_m2).all()


# --- bad input to build_tasks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.assign(change_type="shed"), "allowed: new_building"),
        (lambda s: s.assign(suspect_id="same"), "used twice"),
        (lambda s: s.drop(columns="score"), "score"),
        (lambda s: s.to_crs("EPSG:4490"), "projected"),
    ],
)
def test_bad_suspects_raise_one_line_input_errors(change, message):
    s = suspects([("a", box(0, 0, 10, 10), "other", 0.5), ("b", box(20, 0, 30, 10), "other", 0.5)])
    with pytest.raises(InputError, match=message) as info:
        build_tasks(change(s), offices_ab(), quarter="Q", issued_at=ISSUED)
    assert "\n" not in str(info.value)


def test_bad_quarter_rules_and_naive_time_are_refused():
    s = suspects([("a", box(0, 0, 10, 10), "other", 0.5)])
    with pytest.raises(InputError, match="'../x'"):
        build_tasks(s, offices_ab(), quarter="../x", issued_at=ISSUED)
    with pytest.raises(ValueError, match="time zone"):
        build_tasks(s, offices_ab(), quarter="Q", issued_at=datetime(2024, 4, 1))
    with pytest.raises(ConfigError, match="permit_overlap = 0"):
        TaskRules(permit_overlap=0)
    with pytest.raises(ConfigError, match="key_case_area_m2"):
        TaskRules(key_case_area_m2=1)


# --- reading offices and permits ---------------------------------------------------------------


def write_layer(path, frame, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "crs was not provided"
        pyogrio.write_dataframe(frame, path, **kwargs)
    return path


def offices_file(tmp_path, codes=("AT", "XQ"), crs="EPSG:4490", name="offices.gpkg"):
    frame = gpd.GeoDataFrame(
        {
            "id": range(len(codes)),
            "code": list(codes),
            "名称": ["澳头街道", "西区街道"][: len(codes)],
        },
        geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100)][: len(codes)],
        crs=GRID,
    )
    if crs is not None:
        frame = frame.to_crs(crs)
    else:
        frame = frame.set_crs(None, allow_override=True)
    return write_layer(tmp_path / name, frame)


def test_read_offices_renames_and_reprojects(tmp_path):
    path = offices_file(tmp_path)
    offices = read_offices(path, code_field="code", name_field="名称", crs=GRID)
    assert list(offices.columns) == ["office_code", "office_name", "geometry"]
    assert offices["office_code"].tolist() == ["AT", "XQ"]
    assert offices["office_name"].tolist() == ["澳头街道", "西区街道"]
    assert offices.crs.to_epsg() == 4547
    assert offices.geometry.iloc[0].equals_exact(box(0, 0, 100, 100), tolerance=1e-3)
    # a rasterio CRS (what the grid carries) works too
    again = read_offices(
        path, code_field="code", name_field="名称", crs=rasterio.crs.CRS.from_epsg(4547)
    )
    assert again.crs.to_epsg() == 4547


def test_integer_codes_become_text(tmp_path):
    frame = gpd.GeoDataFrame(
        {"code": [441303001.0, 441303002.0], "name": ["a", "b"]},
        geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1)],
        crs=GRID,
    )
    path = write_layer(tmp_path / "o.gpkg", frame)
    offices = read_offices(path, code_field="code", name_field="name", crs=GRID)
    assert offices["office_code"].tolist() == ["441303001", "441303002"]


def test_invalid_office_polygons_are_repaired(tmp_path):
    bowtie = shapely.Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
    frame = gpd.GeoDataFrame({"code": ["A"], "name": ["a"]}, geometry=[bowtie], crs=GRID)
    path = write_layer(tmp_path / "o.gpkg", frame)
    offices = read_offices(path, code_field="code", name_field="name", crs=GRID)
    assert offices.is_valid.all()
    assert offices.area.iloc[0] == pytest.approx(50)


def expect_one_line(error, match, call):
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_offices_file_errors_are_one_line(tmp_path):
    read = lambda p, **kw: read_offices(  # noqa: E731
        p, **{"code_field": "code", "name_field": "名称", "crs": GRID, **kw}
    )
    expect_one_line(
        ConfigError,
        r"missing\.gpkg does not exist; check \[offices\] path",
        lambda: read(tmp_path / "missing.gpkg"),
    )
    path = offices_file(tmp_path)
    msg = expect_one_line(
        ConfigError,
        r"has no field 'code_x' \(fields: id, code, 名称\); "
        r"set \[offices\] code_field",
        lambda: read(path, code_field="code_x"),
    )
    assert str(path) in msg
    expect_one_line(
        ConfigError, r"set \[offices\] name_field", lambda: read(path, name_field="name")
    )
    expect_one_line(
        InputError, "has no CRS", lambda: read(offices_file(tmp_path, crs=None, name="nocrs.gpkg"))
    )
    empty = write_layer(tmp_path / "empty.gpkg", gpd.read_file(path).iloc[:0])
    expect_one_line(InputError, "has no features", lambda: read(empty))
    text = tmp_path / "text.gpkg"
    text.write_text("not a geopackage")
    expect_one_line(InputError, "cannot be read as a vector file", lambda: read(text))


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (("../x", "B"), r"office code '\.\./x'"),
        (("a/b", "B"), r"office code 'a/b'"),
        (("A B", "C"), r"office code 'A B'"),
        (("A-1", "B"), r"office code 'A-1'"),
        (("CON", "B"), r"office code 'CON'"),
        (("AT", "at"), r"office code 'AT' .* used by 2 features"),
        ((" ", "B"), r"feature 1 has an empty value in field 'code'"),
    ],
)
def test_unsafe_or_duplicate_office_codes_are_refused(tmp_path, codes, match):
    path = offices_file(tmp_path, codes=codes)
    expect_one_line(
        InputError,
        match,
        lambda: read_offices(path, code_field="code", name_field="名称", crs=GRID),
    )


def test_safe_codes():
    assert is_safe_code("AT") and is_safe_code("441303001") and is_safe_code("xi_qu")
    for bad in ("", ".", "..", "a.b", "a b", "a/b", "a\\b", "中文", "x" * 33, "nul", "LPT1"):
        assert not is_safe_code(bad), bad


def test_non_polygon_offices_are_refused(tmp_path):
    frame = gpd.GeoDataFrame(
        {"code": ["A"], "name": ["a"]}, geometry=[shapely.Point(X0, Y0)], crs=GRID
    )
    path = write_layer(tmp_path / "pts.gpkg", frame)
    expect_one_line(
        InputError,
        "feature 1 is a Point",
        lambda: read_offices(path, code_field="code", name_field="name", crs=GRID),
    )


def test_read_permits(tmp_path):
    frame = gpd.GeoDataFrame(
        {"permit_no": ["建字第1号", "建字第1号", "建字第2号"]},
        geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10), box(40, 0, 50, 10)],
        crs=GRID,
    ).to_crs("EPSG:4490")
    path = write_layer(tmp_path / "permits.gpkg", frame)
    p = read_permits(path, id_field="permit_no", crs=GRID)
    assert list(p.columns) == ["permit_id", "geometry"]
    assert p["permit_id"].tolist() == ["建字第1号", "建字第1号", "建字第2号"]
    assert p.crs.to_epsg() == 4547
    expect_one_line(
        ConfigError,
        r"set \[permits\] id_field",
        lambda: read_permits(path, id_field="permit_id", crs=GRID),
    )
    expect_one_line(
        ConfigError,
        r"check \[permits\] path",
        lambda: read_permits(tmp_path / "nope.gpkg", id_field="x", crs=GRID),
    )
    empty = write_layer(tmp_path / "none.gpkg", frame.iloc[:0])
    assert read_permits(empty, id_field="permit_no", crs=GRID).empty


# --- vocabulary --------------------------------------------------------------------------------


def test_vocabulary_round_trips_both_languages():
    spellings = accepted(RESULTS)
    for code, zh in RESULTS.items():
        assert spellings[code] == code and spellings[zh] == code
        assert label(RESULTS, code, lang="zh") == zh and label(RESULTS, code, lang="en") == code
    for field, zh in TASK_HEADERS.items():
        assert HEADER_FIELDS[field] == field and HEADER_FIELDS[zh] == field
    assert list(TASK_HEADERS)[0] == "task_id" and TASK_HEADERS["result"] == "核查结果"


# --- earlier tasks: persisting, repeated, demolished -------------------------------------------


def earlier(rows):
    """rows: (task_id, geometry, result, closed) -> an earlier-tasks frame as the register has."""
    ids, geoms, results, closed = zip(*rows, strict=True)
    return gpd.GeoDataFrame(
        {
            "task_id": list(ids),
            "result": list(results),
            "closed_at": [pd.Timestamp("2024-05-01", tz="UTC") if c else pd.NaT for c in closed],
        },
        geometry=list(geoms),
        crs=GRID,
    )


def test_suspect_at_an_open_task_is_linked_not_issued():
    s = suspects(
        [
            ("again", box(10, 10, 30, 30), "extension", 0.8),
            ("sliver", box(49, 10, 70, 30), "new_building", 0.9),  # 1 m of 21 inside: not linked
            ("new", box(60, 60, 80, 80), "new_building", 0.9),
        ]
    )
    prior = earlier([("Q0-A-0001", box(12, 12, 50, 30), None, False)])
    ts = build_tasks(s, offices_ab(), quarter="Q1", earlier=prior, issued_at=ISSUED)
    held = ts.suppressed.set_index("suspect_id")
    assert held.loc["again", "reason"] == "persisting:Q0-A-0001"
    assert held.loc["again", "prior_task_id"] == "Q0-A-0001"
    assert held.loc["again", "office_code"] == "A"
    assert sorted(ts.tasks["suspect_id"]) == ["new", "sliver"]
    assert ts.tasks["prior_task_id"].isna().all()
    # the persisting suspect takes no number
    assert sorted(ts.tasks["task_id"]) == ["Q1-A-0001", "Q1-A-0002"]


def test_suspect_at_a_closed_task_is_a_new_linked_task_and_repeats_make_key_cases():
    s = suspects(
        [
            ("back", box(10, 10, 20, 20), "new_building", 0.5),  # 100 m², otherwise priority 3
            ("cleared", box(60, 10, 70, 20), "land_clearing", 0.5),
        ]
    )
    prior = earlier(
        [
            ("Q0-A-0001", box(10, 10, 20, 20), "illegal", True),
            ("Q0-A-0002", box(60, 10, 70, 20), "false_positive", True),
        ]
    )
    ts = build_tasks(s, offices_ab(), quarter="Q1", earlier=prior, issued_at=ISSUED)
    tasks = ts.tasks.set_index("suspect_id")
    assert tasks["prior_task_id"].to_dict() == {"back": "Q0-A-0001", "cleared": "Q0-A-0002"}
    # a closed illegal case that comes back is a key case (重点督办), priority 1
    assert tasks.loc["back", "key_case"] and tasks.loc["back", "priority"] == 1
    assert not tasks.loc["cleared", "key_case"]
    # two repeats needed: no key case
    rules = TaskRules(key_case_repeats=2)
    again = build_tasks(s, offices_ab(), quarter="Q1", earlier=prior, rules=rules, issued_at=ISSUED)
    assert not again.tasks.set_index("suspect_id").loc["back", "key_case"]


def test_demolition_of_an_illegal_case_is_evidence_not_a_task():
    s = suspects(
        [
            ("gone", box(10, 10, 20, 20), "demolition", 0.8),
            ("gone_legal", box(60, 10, 70, 20), "demolition", 0.8),
        ]
    )
    prior = earlier(
        [
            ("Q0-A-0001", box(10, 10, 20, 20), "illegal", False),
            ("Q0-A-0002", box(60, 10, 70, 20), "legal", True),
        ]
    )
    ts = build_tasks(s, offices_ab(), quarter="Q1", earlier=prior, issued_at=ISSUED)
    assert ts.suppressed[["suspect_id", "reason", "prior_task_id"]].values.tolist() == [
        ["gone", "demolition_observed:Q0-A-0001", "Q0-A-0001"]
    ]
    # a demolition at a closed task that was not illegal is a new task, linked to it
    assert ts.tasks[["suspect_id", "prior_task_id"]].values.tolist() == [
        ["gone_legal", "Q0-A-0002"]
    ]


def test_permit_and_min_area_win_over_earlier_tasks():
    s = suspects(
        [
            ("permitted", box(10, 10, 20, 20), "new_building", 0.9),
            ("tiny", box(60, 10, 63, 13), "new_building", 0.9),
        ]
    )
    prior = earlier(
        [
            ("Q0-A-0001", box(10, 10, 20, 20), None, False),
            ("Q0-A-0002", box(60, 10, 63, 13), None, False),
        ]
    )
    p = permits([("P1", box(0, 0, 30, 30))])
    ts = build_tasks(s, offices_ab(), quarter="Q1", permits=p, earlier=prior, issued_at=ISSUED)
    held = ts.suppressed.set_index("suspect_id")
    assert held["reason"].to_dict() == {"permitted": "permit:P1", "tiny": "below_min_area"}
    assert held["prior_task_id"].isna().all()


def test_earlier_tasks_in_another_crs_and_without_fields():
    s = suspects([("again", box(10, 10, 30, 30), "extension", 0.8)])
    prior = earlier([("Q0-A-0001", box(10, 10, 30, 30), None, False)]).to_crs("EPSG:4490")
    ts = build_tasks(s, offices_ab(), quarter="Q1", earlier=prior, issued_at=ISSUED)
    assert ts.suppressed["reason"].tolist() == ["persisting:Q0-A-0001"]
    with pytest.raises(InputError, match="closed_at"):
        build_tasks(
            s, offices_ab(), quarter="Q1", earlier=prior.drop(columns="closed_at"), issued_at=ISSUED
        )


def test_due_date_and_status():
    s = suspects([("s", box(40, 40, 60, 60), "new_building", 0.9)])
    ts = build_tasks(
        s, offices_ab(), quarter="Q1", rules=TaskRules(deadline_days=45), issued_at=ISSUED
    )
    row = ts.tasks.iloc[0]
    assert row["due_at"] == pd.Timestamp("2024-05-16 08:00", tz="UTC")
    assert row["status"] == "issued"
    with pytest.raises(ConfigError, match="deadline_days = 0"):
        TaskRules(deadline_days=0)
    with pytest.raises(ConfigError, match="link_overlap"):
        TaskRules(link_overlap=0)
