"""Reading image pairs and labelled pairs folders, writing masks, and their one-line errors."""

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import REALDATA
from PIL import Image
from rasterio.enums import ColorInterp

from cli import main
from errors import InputError
from pipeline.pairs import list_pairs, read_pair, write_mask

runner = CliRunner()


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode=mode).save(path)
    return path


def _rgb(seed, shape=(24, 32)):
    return np.random.default_rng(seed).integers(0, 255, shape + (3,), dtype=np.uint8)


def _pairs_folder(root, names=("a", "b"), shape=(24, 32), meta=None):
    for i, name in enumerate(names):
        _png(root / "A" / f"{name}.png", _rgb(i, shape))
        _png(root / "B" / f"{name}.png", _rgb(i + 10, shape))
        _png(root / "label" / f"{name}.png", np.zeros(shape, np.uint8))
    if meta is not None:
        (root / "meta.toml").write_text(meta)
    return root


def test_pairs_folder_with_meta(tmp_path):
    files = list_pairs(_pairs_folder(tmp_path / "set", meta="pixel_size = 0.3\n"))
    assert [f.name for f in files] == ["a", "b"]
    pair = files[0].read()
    assert pair.pixel_size == 0.3 and pair.shape == (24, 32)
    assert pair.before.satellite.shape == (3, 24, 32) and pair.before.satellite.dtype == np.float32
    assert pair.before.satellite_bands == ("red", "green", "blue")
    np.testing.assert_array_equal(pair.before.satellite[0], _rgb(0)[..., 0])
    assert pair.label.dtype == bool and not pair.label.any()


def test_default_pixel_size_without_meta(tmp_path):
    assert list_pairs(_pairs_folder(tmp_path / "set"))[0].read().pixel_size == 0.5
    assert list_pairs(_pairs_folder(tmp_path / "set"))[0].pixel_size is None


def test_rgba_alpha_is_the_valid_mask_and_grey_is_rgb(tmp_path):
    rgba = np.dstack([_rgb(1), np.full((24, 32), 255, np.uint8)])
    rgba[:4, :, 3] = 0
    grey = _rgb(2)[..., 0]
    pair = read_pair(_png(tmp_path / "a.png", rgba, "RGBA"), _png(tmp_path / "b.png", grey, "L"))
    assert pair.before.satellite.shape == (3, 24, 32)
    assert not pair.before.satellite_valid[:4].any() and pair.before.satellite_valid[4:].all()
    assert pair.after.satellite_valid is None
    np.testing.assert_array_equal(pair.after.satellite[0], pair.after.satellite[2])


def test_geotiff_pair_carries_its_pixel_size_and_grid(tmp_path, make_raster):
    data = np.stack([_rgb(3)[..., k] for k in range(3)] + [np.full((24, 32), 255, np.uint8)])
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    before = make_raster("a.tif", data, res=0.3, colorinterp=interp)
    after = make_raster("b.tif", data, res=0.3, colorinterp=interp)
    pair = read_pair(before, after, pixel_size=0.5)
    assert pair.pixel_size == pytest.approx(0.3) and pair.before.satellite.shape == (3, 24, 32)
    out = write_mask(tmp_path / "mask.tif", np.eye(24, 32, dtype=bool), like=pair)
    with rasterio.open(out) as src, rasterio.open(before) as ref:
        assert src.count == 1 and src.crs == ref.crs and src.transform == ref.transform
        assert set(np.unique(src.read(1))) == {0, 255}


def test_png_mask_is_single_band_0_255(tmp_path):
    out = write_mask(tmp_path / "m.png", np.eye(5, 7, dtype=bool))
    image = Image.open(out)
    assert image.mode == "L" and image.size == (7, 5)
    assert set(np.unique(np.asarray(image))) == {0, 255}


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda root: (root / "B" / "b.png").unlink(), "B has no image named 'b'"),
        (
            lambda root: _png(root / "label" / "c.png", np.zeros((24, 32))),
            "A has no image named 'c'",
        ),
        (lambda root: __import__("shutil").rmtree(root / "label"), "has no label/ folder"),
        (lambda root: (root / "meta.toml").write_text("pixel_size = -1\n"), "pixel_size = -1"),
        (lambda root: (root / "meta.toml").write_text("pixel_size = \n"), "not valid TOML"),
    ],
)
def test_bad_pairs_folder(tmp_path, damage, expected):
    root = _pairs_folder(tmp_path / "set")
    damage(root)
    with pytest.raises(InputError, match=expected):
        list_pairs(root)


def test_pairs_of_different_sizes_name_both(tmp_path):
    before = _png(tmp_path / "a.png", _rgb(0, (24, 32)))
    after = _png(tmp_path / "b.png", _rgb(1, (20, 32)))
    with pytest.raises(InputError, match=r"b\.png is 32x20 but .*a\.png is 32x24 pixels"):
        read_pair(before, after)


def test_geographic_geotiff_is_refused(make_raster):
    data = _rgb(0).transpose(2, 0, 1)
    before = make_raster("a.tif", data, crs="EPSG:4326", origin=(114.4, 22.8), res=1e-5)
    with pytest.raises(InputError, match="degrees"):
        read_pair(before, before)


def _one_line_error(result, *expected):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    for text in expected:
        assert text in lines[0]


def test_cli_pairs_of_different_sizes_exit_2(tmp_path):
    root = _pairs_folder(tmp_path / "set")
    _png(root / "B" / "a.png", _rgb(5, (16, 32)))
    _one_line_error(runner.invoke(main, ["evaluate", str(root)]), "a.png is 32x16", "32x24")
    _one_line_error(
        runner.invoke(main, ["train", str(root), "-o", str(tmp_path / "m.pkl")]), "32x16"
    )
    _one_line_error(
        runner.invoke(
            main,
            [
                "predict",
                str(root / "A" / "a.png"),
                str(root / "B" / "a.png"),
                "-o",
                str(tmp_path / "m.png"),
            ],
        ),
        "32x16",
    )
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "m.pkl").exists()


def test_cli_multi_band_label_exit_2(tmp_path):
    root = _pairs_folder(tmp_path / "set")
    _png(root / "label" / "b.png", _rgb(7))
    _one_line_error(runner.invoke(main, ["evaluate", str(root), "--json"]), "b.png has 3 bands")


@pytest.mark.realdata
@pytest.mark.skipif(not (REALDATA / "WHU-CD").is_dir(), reason="../shared/realdata is not there")
def test_realdata_pairs_folders():
    whu = list_pairs(REALDATA / "WHU-CD")
    assert [f.pixel_size for f in whu] == [0.3, 0.3]
    pair = whu[0].read()
    assert pair.shape == (1024, 1024) and pair.label.any() and not pair.label.all()
    levir = list_pairs(REALDATA / "LEVIR-CD")
    assert len(levir) == 9 and levir[0].read().pixel_size == 0.5
