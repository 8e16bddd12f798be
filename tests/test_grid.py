import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import ConfigError
from tiles import Bounds, Grid, TileId

GRID = Grid("EPSG:4547", 0.5, tile_size=1024, halo=64)


def test_tile_of_known_point():
    # 512 m tiles anchored at the CRS origin
    tile = GRID.tile_of(520_130.0, 2_522_270.0)
    assert tile == TileId(row=4926, col=1015)
    assert GRID.bounds(tile) == Bounds(519_680.0, 2_522_112.0, 520_192.0, 2_522_624.0)


def test_haloed_transform_and_core():
    tile = TileId(10, 20)
    t = GRID.transform(tile)
    assert (t.a, t.e) == (0.5, -0.5)
    assert (t.c, t.f) == (20 * 512 - 32.0, 11 * 512 + 32.0)
    rows, cols = GRID.core_slices()
    assert (rows.start, rows.stop) == (64, 1088)
    assert GRID.window_size == 1152
    # the core window's upper-left pixel corner is the tile's upper-left corner
    x, y = t @ (cols.start, rows.start)
    assert (x, y) == (GRID.bounds(tile).left, GRID.bounds(tile).top)


def test_tiles_cover_bounds_row_by_row_from_north_west():
    tiles = list(GRID.tiles(Bounds(100.0, 100.0, 1100.0, 600.0)))
    assert tiles == [
        TileId(1, 0),
        TileId(1, 1),
        TileId(1, 2),
        TileId(0, 0),
        TileId(0, 1),
        TileId(0, 2),
    ]
    # bounds that only touch a tile edge do not pull that tile in
    assert list(GRID.tiles(Bounds(0.0, 0.0, 512.0, 512.0))) == [TileId(0, 0)]


def test_tile_names_round_trip_including_negative():
    for tile in (TileId(4926, 1015), TileId(-3, 7), TileId(0, -12)):
        assert TileId.parse(tile.name) == tile
    assert TileId(-3, 7).name == "rm3_c7"
    with pytest.raises(ValueError, match="not a tile name"):
        TileId.parse("4926_1015")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(crs="EPSG:4326", resolution=0.5), "not a projected CRS"),
        (dict(crs="EPSG:999999", resolution=0.5), "not a known CRS"),
        (dict(crs="EPSG:4547", resolution=0.0), "resolution"),
        (dict(crs="EPSG:4547", resolution=0.5, halo=900), "halo"),
    ],
)
def test_bad_grid_parameters(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Grid(**kwargs)


coords = st.floats(min_value=-1e6, max_value=1e7, allow_nan=False)


@given(x=coords, y=coords)
def test_point_lies_in_its_tile(x, y):
    b = GRID.bounds(GRID.tile_of(x, y))
    assert b.left <= x < b.right or math.isclose(x, b.right)
    assert b.bottom <= y < b.top or math.isclose(y, b.top)


@given(x0=coords, y0=coords, w=st.floats(1.0, 5000.0), h=st.floats(1.0, 5000.0))
def test_tiles_partition_bounds(x0, y0, w, h):
    box = Bounds(x0, y0, x0 + w, y0 + h)
    tiles = list(GRID.tiles(box))
    assert len(tiles) == len(set(tiles))
    area = sum(GRID.bounds(t).intersection(box).area for t in tiles)
    assert math.isclose(area, box.area, rel_tol=1e-6)
