import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.enums import ColorInterp, MaskFlags

from errors import InputError
from tiles import Grid, TileId, describe_source, read_onto_tile, read_tile, write_tile

GRID = Grid("EPSG:4547", 0.5, tile_size=64, halo=8)
TILE = TileId(row=78_812, col=16_250)  # 32 m tiles; covers x 520000..520032, y 2521984..2522016


def _origin():
    b = GRID.bounds(TILE, halo=True)
    return b.left, b.top


def test_same_grid_source_reads_back_exactly(make_raster):
    n = GRID.window_size
    data = np.arange(n * n, dtype=np.uint16).reshape(1, n, n)
    path = make_raster("a.tif", data, origin=_origin())
    info = describe_source(path, grid=GRID)
    out, valid, used = read_onto_tile([info], GRID, TILE, bands=[1])
    assert valid.all() and used == [str(path)]
    np.testing.assert_array_equal(out, data)


def test_nodata_and_outside_the_file_are_invalid(make_raster):
    n = GRID.window_size
    data = np.full((1, n // 2, n), 7, dtype=np.uint16)
    data[0, :, :5] = 0
    path = make_raster("half.tif", data, origin=_origin(), nodata=0)
    out, valid, _ = read_onto_tile([describe_source(path, grid=GRID)], GRID, TILE, bands=[1])
    assert valid[: n // 2, 5:].all()
    assert not valid[: n // 2, :5].any()
    assert not valid[n // 2 :].any()
    assert (out[0][valid] == 7).all()


def test_file_without_nodata_or_alpha_is_invalid_outside_its_extent(make_raster):
    n = GRID.window_size
    path = make_raster("plain.tif", np.full((1, n, n // 2), 9, np.uint8), origin=_origin())
    _, valid, _ = read_onto_tile([describe_source(path, grid=GRID)], GRID, TILE, bands=[1])
    assert valid[:, : n // 2 - 1].all()
    assert not valid[:, n // 2 + 1 :].any()


def test_utm_rgba_drone_source_is_warped_with_its_alpha(make_raster):
    # a 0.1 m RGBA orthomosaic in UTM 50N whose right half is transparent
    to_utm = Transformer.from_crs("EPSG:4547", "EPSG:32650", always_xy=True)
    b = GRID.bounds(TILE, halo=True)
    x0, y0 = to_utm.transform(b.left - 5, b.top + 5)
    size = 500
    rgba = np.zeros((4, size, size), np.uint8)
    rgba[0], rgba[1], rgba[2] = 200, 100, 50
    rgba[3, :, : size // 2] = 255
    path = make_raster(
        "drone.tif",
        rgba,
        crs="EPSG:32650",
        origin=(x0, y0),
        res=0.1,
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
    )
    info = describe_source(path, grid=GRID)
    assert info.alpha == 4
    out, valid, _ = read_onto_tile([info], GRID, TILE, bands=[1, 2, 3])
    assert 0.2 < valid.mean() < 0.6  # the opaque half of the file, roughly
    assert np.abs(out[:, valid].astype(int) - [[200], [100], [50]]).max() <= 1


def test_mosaic_first_valid_file_wins(make_raster):
    n = GRID.window_size
    left, top = _origin()
    a = make_raster(
        "a.tif", np.full((1, n, n // 2 + 4), 1, np.uint16), origin=(left, top), nodata=0
    )
    b = make_raster("b.tif", np.full((1, n, n), 2, np.uint16), origin=(left, top), nodata=0)
    infos = [describe_source(p, grid=GRID) for p in (a, b)]
    out, valid, used = read_onto_tile(infos, GRID, TILE, bands=[1])
    assert valid.all() and used == [str(a), str(b)]
    assert (out[0, :, : n // 2] == 1).all() and (out[0, :, n // 2 + 4 :] == 2).all()


def test_tile_store_round_trip_with_mask(tmp_path):
    n = GRID.window_size
    data = np.random.default_rng(0).integers(0, 4000, (4, n, n), dtype=np.uint16)
    valid = np.zeros((n, n), bool)
    valid[10:40, 5:70] = True
    path = tmp_path / "store" / "t.tif"
    write_tile(path, data, valid, grid=GRID, tile=TILE, band_names=("blue", "green", "red", "nir"))
    back, back_valid, names = read_tile(path)
    np.testing.assert_array_equal(back, data)
    np.testing.assert_array_equal(back_valid, valid)
    assert names == ("blue", "green", "red", "nir")
    with rasterio.open(path) as src:
        assert src.profile["compress"] == "zstd" and src.profile["tiled"]
        assert src.transform == GRID.transform(TILE)
    assert not list(path.parent.glob("*.part"))


def test_a_tile_valid_everywhere_is_stored_without_a_mask(tmp_path):
    n = GRID.window_size
    data = np.random.default_rng(1).integers(1, 4000, (2, n, n), dtype=np.uint16)
    path = tmp_path / "t.tif"
    write_tile(path, data, np.ones((n, n), bool), grid=GRID, tile=TILE, band_names=("red", "nir"))
    back, back_valid, _ = read_tile(path)
    np.testing.assert_array_equal(back, data)
    assert back_valid.all()
    with rasterio.open(path) as src:
        assert src.mask_flag_enums[0] == [MaskFlags.all_valid]


def test_raster_without_crs_is_refused(make_raster):
    path = make_raster("nocrs.tif", np.ones((1, 8, 8), np.uint8), crs=None)
    with pytest.raises(InputError, match=r"nocrs\.tif has no CRS"):
        describe_source(path, grid=GRID)


def test_corrupt_raster_is_named(tmp_path, make_raster):
    good = make_raster("good.tif", np.ones((1, 64, 64), np.uint16))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(InputError, match=r"bad\.tif"):
        describe_source(bad, grid=GRID)


def test_band_beyond_count_is_refused(make_raster):
    path = make_raster("one.tif", np.ones((1, 80, 80), np.uint16), origin=_origin())
    with pytest.raises(InputError, match=r"has 1 band\(s\) but band 3"):
        read_onto_tile([describe_source(path, grid=GRID)], GRID, TILE, bands=[3])


def test_aligned_and_warped_reads_agree(make_raster):
    # the same pixels once on the grid (plain windowed read) and once shifted by a tiny
    # sub-pixel amount (forcing the warp path): the warp reproduces the direct read
    n = GRID.window_size
    rng = np.random.default_rng(3)
    data = rng.integers(100, 4000, (2, n + 20, n + 20), dtype=np.uint16)
    data[:, :, :30] = 0
    left, top = _origin()
    aligned = make_raster("aligned.tif", data, origin=(left - 5.0, top + 5.0), nodata=0)
    warped = make_raster("warped.tif", data, origin=(left - 5.0 + 1e-4, top + 5.0), nodata=0)
    a, va, _ = read_onto_tile([describe_source(aligned, grid=GRID)], GRID, TILE, bands=[1, 2])
    b, vb, _ = read_onto_tile([describe_source(warped, grid=GRID)], GRID, TILE, bands=[1, 2])
    np.testing.assert_array_equal(a, data[:, 10 : 10 + n, 10 : 10 + n])
    assert (va == vb).mean() > 0.99
    both = va & vb
    assert np.abs(a[:, both].astype(int) - b[:, both].astype(int)).max() <= 2
