"""Image chips from the epochs' tile stores: placement across tiles, imagery choice, outline, speed."""

from __future__ import annotations

import json
from dataclasses import replace

import geopandas as gpd
import numpy as np
import pytest
import shapely
from PIL import Image

from pipeline.chips import ChipOptions, write_chips
from pipeline.executors import Executor
from tiles import Grid, TileId, write_tile

GRID = Grid(crs="EPSG:4547", resolution=0.5, tile_size=32, halo=4)  # 16 m tiles
ROW, COL = 156_000, 32_500  # tile (ROW, COL) has its south-west corner at (520 000, 2 496 000)
X0, Y0 = COL * 16.0, ROW * 16.0


def store(work, epoch, kind, tiles, *, bands=("red", "green", "blue"), values=None, dtype="uint8"):
    """Write ``kind`` tiles of ``epoch`` (one constant value per tile, from ``values``) and the
    epoch's index; ``tiles`` are (row, col) offsets from (ROW, COL)."""
    root = work / "epochs" / epoch
    index_path = root / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"tiles": {}}
    n = GRID.window_size
    for k, (dr, dc) in enumerate(tiles):
        tile = TileId(ROW + dr, COL + dc)
        value = values[k] if values is not None else 100
        data = np.full((len(bands), n, n), value, dtype=dtype)
        path = root / kind / f"{tile.name}.tif"
        write_tile(path, data, np.ones((n, n), bool), grid=GRID, tile=tile, band_names=bands)
        index["tiles"].setdefault(tile.name, {})[kind] = {
            "file": f"{kind}/{tile.name}.tif",
            "bands": list(bands),
        }
    index_path.write_text(json.dumps({"epoch": epoch, **index}))


def tasks(*geoms, office="AT"):
    return gpd.GeoDataFrame(
        {"task_id": [f"Q-{office}-{i + 1:04d}" for i in range(len(geoms))], "office_code": office},
        geometry=list(geoms),
        crs="EPSG:4547",
    )


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


# a 10 m task: 20 m = 40 px, unscaled and lossless
EXACT = ChipOptions(size=40, margin=0.5, min_extent_m=1.0, format="png")


def test_a_task_on_a_tile_corner_gets_one_seamless_chip(tmp_path):
    sat = ("blue", "green", "red", "nir")
    four = [(0, 0), (0, 1), (1, 0), (1, 1)]  # SW, SE, NW, NE of the corner at (X0 + 16, Y0 + 16)
    for epoch in ("E0", "E1"):
        store(
            tmp_path,
            epoch,
            "satellite",
            four,
            bands=sat,
            values=[1000, 2000, 3000, 4000],
            dtype="uint16",
        )
    chips = write_chips(
        tasks(box(11, 11, 21, 21)),
        grid=GRID,
        work=tmp_path,
        before="E0",
        after="E1",
        out_dir=tmp_path / "worklists",
        options=EXACT,
    )
    chip = chips["Q-AT-0001"]
    assert chip.before == tmp_path / "worklists" / "AT" / "chips" / "Q-AT-0001_before.png"
    assert chip.before_kind == chip.after_kind == "satellite"
    image = np.asarray(Image.open(chip.after))
    assert image.shape == (40, 40, 3)
    # the chip spans x 6..26, y 6..26 m: the corner is at pixel (20, 20); rows count southwards
    grey = image[..., 1]
    # away from the outline (the task's edges are at pixels 10 and 30)
    quadrants = [grey[33:38, 2:8], grey[33:38, 33:38], grey[2:8, 2:8], grey[2:8, 33:38]]
    means = [q.mean() for q in quadrants]
    assert means == sorted(means) and means[0] == 0 and means[-1] == 255
    assert all(q.std() == 0 for q in quadrants)  # each quadrant read from one tile, no gaps


def test_outline_is_drawn_where_the_task_is(tmp_path):
    for epoch in ("E0", "E1"):
        store(tmp_path, epoch, "drone", [(0, 0)], values=[120])
    chip = write_chips(
        tasks(box(4, 4, 12, 12)),
        grid=GRID,
        work=tmp_path,
        before="E0",
        after="E1",
        out_dir=tmp_path,
        options=ChipOptions(size=24, margin=0.25, min_extent_m=1.0, format="png"),
    )["Q-AT-0001"]
    image = np.asarray(Image.open(chip.before)).astype(int)
    red = (image[..., 0] > 200) & (image[..., 1] < 100)
    # the chip spans x, y 2..14 m; the task's edges are at pixels 4 and 20 both ways
    assert red[4, 6:18].all() and red[20, 6:18].all() and red[6:18, 4].all()
    assert red[6:18, 20].all()
    assert not red[8:16, 8:16].any() and not red[:2].any() and not red[:, 23:].any()


def test_drone_is_preferred_where_it_covers_the_chip(tmp_path):
    sat = ("blue", "green", "red", "nir")
    for epoch in ("E0", "E1"):
        store(tmp_path, epoch, "satellite", [(0, 0), (0, 1)], bands=sat, dtype="uint16")
    store(tmp_path, "E1", "drone", [(0, 0)])  # only the western tile has drone imagery
    inside = box(4, 4, 8, 8)  # a 4 m task: chip 8 m wide, x 2..10, inside the western tile
    across = box(12, 4, 20, 12)  # chip x 8..24, half of it over the eastern tile
    chips = write_chips(
        tasks(inside, across),
        grid=GRID,
        work=tmp_path,
        before="E0",
        after="E1",
        out_dir=tmp_path,
        options=ChipOptions(size=64, min_extent_m=1.0),
    )
    assert (chips["Q-AT-0001"].before_kind, chips["Q-AT-0001"].after_kind) == ("satellite", "drone")
    assert chips["Q-AT-0002"].after_kind == "satellite"


def test_no_imagery_gives_no_chip(tmp_path):
    store(tmp_path, "E1", "drone", [(0, 0)])
    chip = write_chips(
        tasks(box(4, 4, 8, 8)),
        grid=GRID,
        work=tmp_path,
        before="E0",
        after="E1",
        out_dir=tmp_path,
        options=ChipOptions(min_extent_m=1.0),
    )["Q-AT-0001"]
    assert chip.before is None and chip.before_kind is None
    assert chip.after.is_file() and Image.open(chip.after).size == (240, 240)
    assert chip.after.suffix == ".jpg" and Image.open(chip.after).format == "JPEG"


def test_a_rerun_leaves_only_its_own_chips(tmp_path):
    for epoch in ("E0", "E1"):
        store(tmp_path, epoch, "drone", [(0, 0)])
    cut = dict(grid=GRID, work=tmp_path, before="E0", after="E1", out_dir=tmp_path / "worklists")
    small = ChipOptions(size=32, min_extent_m=1.0)
    write_chips(
        tasks(box(4, 4, 8, 8), box(10, 10, 14, 14)), options=replace(small, format="png"), **cut
    )
    folder = tmp_path / "worklists" / "AT" / "chips"
    (folder / "notes.txt").write_text("kept")
    # the quarter again, as JPEG, and the second task is no longer issued
    chips = write_chips(tasks(box(4, 4, 8, 8)), options=small, **cut)
    assert sorted(p.name for p in folder.iterdir()) == [
        "Q-AT-0001_after.jpg",
        "Q-AT-0001_before.jpg",
        "notes.txt",
    ]
    assert chips["Q-AT-0001"].after.is_file()


def test_chips_for_a_hundred_tasks_across_sixteen_tiles_serial_or_on_workers(tmp_path):
    sat = ("blue", "green", "red", "nir")
    grid = [(r, c) for r in range(4) for c in range(4)]
    rng = np.random.default_rng(1)
    for epoch in ("E0", "E1"):
        store(
            tmp_path,
            epoch,
            "satellite",
            grid,
            bands=sat,
            dtype="uint16",
            values=rng.integers(500, 3000, len(grid)),
        )
    x, y = rng.uniform(2, 54, (2, 100))
    hundred = tasks(*shapely.box(X0 + x, Y0 + y, X0 + x + 8, Y0 + y + 6))
    cut = dict(grid=GRID, work=tmp_path, before="E0", after="E1")
    chips = write_chips(hundred, out_dir=tmp_path / "serial", **cut)
    assert len(chips) == 100 and all(c.after is not None for c in chips.values())
    # cut in batches on two worker processes: the same chips, byte for byte
    with Executor("processes", workers=2, progress=False) as executor:
        pooled = write_chips(hundred, out_dir=tmp_path / "pooled", executor=executor, **cut)
    assert pooled.keys() == chips.keys()
    for task_id, chip in chips.items():
        other = pooled[task_id]
        assert (other.before_kind, other.after_kind) == (chip.before_kind, chip.after_kind)
        assert other.after == tmp_path / "pooled" / chip.after.relative_to(tmp_path / "serial")
        assert other.after.read_bytes() == chip.after.read_bytes()
        assert other.before.read_bytes() == chip.before.read_bytes()


@pytest.mark.parametrize("size", [16, 300])
def test_chip_size_is_an_option(tmp_path, size):
    store(tmp_path, "E0", "drone", [(0, 0)])
    chip = write_chips(
        tasks(box(4, 4, 8, 8)),
        grid=GRID,
        work=tmp_path,
        before="E0",
        after="E0",
        out_dir=tmp_path,
        options=ChipOptions(size=size, min_extent_m=1.0),
    )["Q-AT-0001"]
    assert Image.open(chip.after).size == (size, size)
