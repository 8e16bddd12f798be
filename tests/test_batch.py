"""End to end: the synthetic quarter through ingest, changes and worklists, and the tile seams."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from quarters import write_quarter

from cli import main
from pipeline import batch
from pipeline.config import load_config
from pipeline.scoring import score_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--size", "1024", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_writes_every_output(demo_run):
    out, output = demo_run
    q = out / "out" / "2024Q2"
    assert str(q) in output
    with sqlite3.connect(q / "2024Q2.gpkg") as db:
        tables = {r[0] for r in db.execute("select table_name from gpkg_contents")}
        assert {"suspects", "tasks", "suppressed", "offices", "tiles", "clouds"} <= tables
        styles = {
            r[0] for r in db.execute("select f_table_name from layer_styles where useAsDefault")
        }
        assert {"suspects", "tasks"} <= styles
    tasks = gpd.read_file(q / "2024Q2.gpkg", layer="tasks")
    assert tasks.crs.to_epsg() == 4547
    assert tasks["task_id"].str.match(r"^2024Q2-(AT|XQ|XY)-\d{4}$").all()
    assert tasks["task_id"].is_unique
    for code in ("AT", "XQ", "XY"):
        for ext in ("gpkg", "csv", "xlsx"):
            assert (q / "worklists" / code / f"{code}_2024Q2.{ext}").is_file()
    summary = json.loads((q / "summary.json").read_text(encoding="utf-8"))
    assert summary
    manifest = json.loads((q / "manifest.json").read_text(encoding="utf-8"))
    assert {"inputs", "config", "versions", "timings_s"} <= manifest.keys()
    assert {Path(i["path"]).name for i in manifest["inputs"]} >= {"quarter.toml", "offices.gpkg"}
    for entry in manifest["inputs"]:  # hashed beside the stages, each the file's own digest
        assert entry["sha256"] == hashlib.sha256(Path(entry["path"]).read_bytes()).hexdigest()
    tiles = gpd.read_file(q / "2024Q2.gpkg", layer="tiles")
    assert len(tiles) >= 1 and tiles["tile"].is_unique


def test_demo_recall_and_permits(demo_run):
    out, _ = demo_run
    score = score_demo(out / "out" / "2024Q2", out / "truth.gpkg")
    assert score.recall >= 0.9, score
    assert score.permitted_issued == 0, score
    suppressed = gpd.read_file(out / "out" / "2024Q2" / "2024Q2.gpkg", layer="suppressed")
    assert suppressed["reason"].str.startswith("permit:").any()


def test_demo_precision(demo_run):
    out, _ = demo_run
    score = score_demo(out / "out" / "2024Q2", out / "truth.gpkg")
    assert score.precision >= 0.8, score


def test_the_cloud_and_its_shadow_are_mapped_and_not_issued(demo_run):
    out, _ = demo_run
    q = out / "out" / "2024Q2" / "2024Q2.gpkg"
    clouds = gpd.read_file(q, layer="clouds").union_all()
    nuisance = gpd.read_file(out / "truth.gpkg", layer="nuisance").set_index("kind").geometry
    for kind in ("cloud", "cloud_shadow"):
        planted = nuisance[kind].buffer(-5)  # without the faintest fringe
        assert planted.intersection(clouds).area / planted.area > 0.9, kind
    tasks = gpd.read_file(q, layer="tasks")
    assert not tasks.intersects(nuisance["cloud"].union(nuisance["cloud_shadow"])).any()


def test_rerun_gives_the_same_task_ids(demo_run):
    out, _ = demo_run
    config = load_config(out / "quarter.toml")
    before = gpd.read_file(out / "out" / "2024Q2" / "2024Q2.gpkg", layer="tasks")
    batch.worklists(config)
    after = gpd.read_file(out / "out" / "2024Q2" / "2024Q2.gpkg", layer="tasks")
    assert list(after["task_id"]) == list(before["task_id"])
    assert after.geometry.equals(before.geometry)


def test_bad_offices_field_leaves_earlier_outputs_intact(demo_run, tmp_path):
    out, _ = demo_run
    q = out / "out" / "2024Q2"
    before = {p: p.read_bytes() for p in q.rglob("*") if p.is_file()}
    text = (
        (out / "quarter.toml")
        .read_text(encoding="utf-8")
        .replace('code_field = "code"', 'code_field = "office_id"')
    )
    bad = out / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["worklists", str(bad)])
    assert result.exit_code == 2
    assert "office_id" in result.stderr and "code_field" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in q.rglob("*") if p.is_file()} == before


# -- seams -------------------------------------------------------------------------------------


def _scene(rng, size):
    """A textured 4-band ground (uint16 DN) of ``size`` x ``size`` px."""
    base = np.array([900, 1100, 1200, 2600], np.float32)[:, None, None]
    noise = rng.normal(0, 25, (4, size, size)).astype(np.float32)
    return base + noise


def test_building_across_a_tile_corner_gives_one_polygon(tmp_path, make_raster, make_offices):
    # 64 m tiles (128 px at 0.5 m); the tile corner (512000, 2521984) = 8000 x 64, 39406 x 64
    corner_x, corner_y = 8000 * 64.0, 39406 * 64.0
    x0, y0 = corner_x - 100.0, corner_y + 100.0  # upper-left of a 200 m x 200 m area
    size = 400
    rng = np.random.default_rng(1)
    before = _scene(rng, size)
    after = _scene(rng, size)
    # a 24 m x 20 m building centred near the corner (pixels: 0.5 m)
    r0, c0 = int((y0 - corner_y) / 0.5) - 18, int((corner_x - x0) / 0.5) - 26
    after[:3, r0 : r0 + 40, c0 : c0 + 48] = np.array([2600, 2500, 2400])[:, None, None]
    after[3, r0 : r0 + 40, c0 : c0 + 48] = 2500
    make_raster("before.tif", before.astype(np.uint16), origin=(x0, y0), nodata=0)
    make_raster("after.tif", after.astype(np.uint16), origin=(x0, y0), nodata=0)
    make_offices({"AT": (x0, y0 - 200, x0 + 200, y0)})
    bands = {"blue": 1, "green": 2, "red": 3, "nir": 4}
    write_quarter(
        tmp_path,
        {"A": [("satellite", "before.tif", bands)], "B": [("satellite", "after.tif", bands)]},
        tile_size=128,
        halo=32,
    )
    config = load_config(tmp_path / "quarter.toml")
    batch.ingest(config, "A")
    batch.ingest(config, "B")
    suspects = batch.changes(config).suspects
    building = shapely.box(corner_x - 13, corner_y - 11, corner_x + 11, corner_y + 9)
    hits = suspects[suspects.intersects(building)]
    assert len(hits) == 1
    assert hits.geometry.iloc[0].intersection(building).area >= 0.9 * building.area
    assert len(set(suspects["tile"])) <= 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="niceness per thread is Linux's")
def test_background_work_runs_at_the_lowest_priority_and_leaves_the_caller_alone():
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, 0)
    assert batch._in_background(niceness).result() == 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
    with pytest.raises(ZeroDivisionError):  # errors reach whoever asks for the result
        batch._in_background(lambda: 1 / 0).result()
