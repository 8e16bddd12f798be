import json
import os
import shutil

import numpy as np
import pytest
from quarters import write_quarter

from errors import InputError, NoOverlapError
from pipeline.config import load_config
from pipeline.ingest import ingest_epoch
from tiles import TileId, describe_source

# 32 m tiles (64 px at 0.5 m); the area spans x 520000..520100, y 2521900..2522000
X0, Y0 = 520_000.0, 2_522_000.0


def _config(tmp_path, sources: str) -> str:
    text = f"""
[grid]
crs = "EPSG:4547"
resolution = 0.5
tile_size = 64
halo = 8

[offices]
path = "offices.gpkg"

[[epochs]]
id = "A"
date = "2024-03-20"
{sources}

[run]
before = "A"
after = "A"
"""
    path = tmp_path / "quarter.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def area(make_offices):
    return make_offices({"AT": (X0, Y0 - 100, X0 + 100, Y0)})


def _sat(make_raster, name="sat.tif", value=1000, origin=(X0, Y0)):
    data = np.full((4, 200, 200), value, np.uint16)
    data[3] = 3000
    return make_raster(name, data, origin=origin, nodata=0)


SAT = '[[epochs.sources]]\nkind = "satellite"\npath = "sat*.tif"\nbands = { blue = 1, green = 2, red = 3, nir = 4 }\n'


def test_ingest_writes_tiles_and_index(tmp_path, make_raster, area):
    _sat(make_raster)
    config = load_config(_config(tmp_path, SAT))
    index = ingest_epoch(config, "A")
    # 100 m x 100 m not aligned to 32 m tiles: 4 x 4 tiles touch it
    assert len(index.tiles) == 16
    rec = index.tiles["r78811_c16250"]["satellite"]  # wholly inside the source
    assert rec["bands"] == ["blue", "green", "red", "nir"] and rec["valid_fraction"] == 1.0
    stored = json.loads((tmp_path / "work/epochs/A/index.json").read_text())
    assert stored["tiles"].keys() == index.tiles.keys()
    assert (tmp_path / "work/epochs/A" / rec["file"]).is_file()


def test_reingest_only_rewrites_tiles_a_changed_file_touches(tmp_path, make_raster, area):
    _sat(make_raster, "sat_a.tif", origin=(X0, Y0))
    _sat(make_raster, "sat_b.tif", origin=(X0 + 64, Y0))  # only the eastern tiles
    config = load_config(_config(tmp_path, SAT))
    ingest_epoch(config, "A")
    files = sorted((tmp_path / "work/epochs/A/satellite").glob("*.tif"))
    before = {f.name: f.stat().st_mtime_ns for f in files}
    ingest_epoch(config, "A")
    assert {f.name: f.stat().st_mtime_ns for f in files} == before  # nothing rewritten
    os.utime(tmp_path / "sat_b.tif", ns=(1, 1))  # sat_b changed
    ingest_epoch(config, "A")
    after = {f.name: f.stat().st_mtime_ns for f in files}
    changed = {name.removesuffix(".tif") for name in before if after[name] != before[name]}
    grid = config.grid_spec
    b_bounds = describe_source(tmp_path / "sat_b.tif", grid=grid).bounds
    expected = {
        name.removesuffix(".tif")
        for name in before
        if grid.bounds(TileId.parse(name.removesuffix(".tif")), halo=True).intersection(b_bounds)
    }
    assert changed == expected
    assert changed != {name.removesuffix(".tif") for name in before}


def test_source_outside_the_offices_is_refused(tmp_path, make_raster, area):
    _sat(make_raster, origin=(X0 + 50_000, Y0))
    config = load_config(_config(tmp_path, SAT))
    with pytest.raises(
        NoOverlapError, match=r"sat\.tif: epoch 'A' satellite does not overlap the offices"
    ):
        ingest_epoch(config, "A")


def test_multiband_dsm_is_refused(tmp_path, make_raster, area):
    make_raster("dsm.tif", np.zeros((2, 50, 50), np.float32), origin=(X0, Y0))
    config = load_config(_config(tmp_path, '[[epochs.sources]]\nkind = "dsm"\npath = "dsm.tif"\n'))
    with pytest.raises(InputError, match=r"dsm\.tif is a DSM with 2 bands"):
        ingest_epoch(config, "A")


def test_band_beyond_the_file_is_refused(tmp_path, make_raster, area):
    make_raster("sat.tif", np.ones((3, 50, 50), np.uint16), origin=(X0, Y0))
    config = load_config(_config(tmp_path, SAT))
    with pytest.raises(InputError, match=r"sat\.tif has 3 band\(s\) but nir = 4 is mapped"):
        ingest_epoch(config, "A")


def test_unnamed_bands_without_mapping_are_refused(tmp_path, make_raster, area):
    make_raster("sat.tif", np.ones((4, 50, 50), np.uint16), origin=(X0, Y0))
    config = load_config(
        _config(tmp_path, '[[epochs.sources]]\nkind = "satellite"\npath = "sat.tif"\n')
    )
    with pytest.raises(InputError, match=r"set bands = \{"):
        ingest_epoch(config, "A")


def test_internal_mask_is_honoured_through_reprojection(tmp_path, make_raster, area):
    # a UTM 50N source whose right half is masked by an internal (per-dataset) mask
    import rasterio
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4547", "EPSG:32650", always_xy=True).transform(
        X0 - 10, Y0 + 10
    )
    path = make_raster(
        "sat.tif", np.full((4, 300, 300), 1500, np.uint16), crs="EPSG:32650", origin=(x, y)
    )
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        mask = np.zeros((300, 300), np.uint8)
        mask[:, :150] = 255
        dst.write_mask(mask)
    config = load_config(_config(tmp_path, SAT))
    index = ingest_epoch(config, "A")
    fractions = {t: k["satellite"]["valid_fraction"] for t, k in index.tiles.items()}
    # masked half (east of ~X0 + 65 m) is invalid, not read as zeros
    assert fractions["r78811_c16250"] == 1.0  # x 520000..520032: inside the unmasked half
    assert "r78811_c16253" not in fractions  # x 520096..520128: masked only


def test_truncated_file_among_many_is_named(tmp_path, make_raster, area):
    for i in range(3):
        _sat(make_raster, f"sat_{i}.tif", origin=(X0 + 30 * i, Y0))
    bad = tmp_path / "sat_1.tif"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # header intact, blocks cut off
    config = load_config(_config(tmp_path, SAT))
    with pytest.raises(InputError, match=r"sat_1\.tif"):
        ingest_epoch(config, "A")


def test_epochs_without_common_bands_are_refused(tmp_path, make_raster, area):
    from pipeline.changes import detect_quarter

    make_raster("pan.tif", np.full((1, 200, 200), 900, np.uint16), origin=(X0, Y0), nodata=0)
    make_raster("rgb.tif", np.full((3, 200, 200), 90, np.uint8), origin=(X0, Y0))
    write_quarter(
        tmp_path,
        {
            "A": [("satellite", "pan.tif", {"pan": 1})],
            "B": [("satellite", "rgb.tif", {"red": 1, "green": 2, "blue": 3})],
        },
    )
    config = load_config(tmp_path / "quarter.toml")
    ingest_epoch(config, "A")
    ingest_epoch(config, "B")
    with pytest.raises(
        InputError, match=r"epochs 'A' \(satellite: pan\) and 'B' .* no bands in common"
    ):
        detect_quarter(config)


def test_cli_bad_ingest_input_exits_2_and_keeps_the_store(tmp_path, make_raster, area):
    from click.testing import CliRunner

    from cli import main

    _sat(make_raster)
    config_path = _config(tmp_path, SAT)
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(config_path), "--epoch", "A"]).exit_code == 0
    store = {p: p.read_bytes() for p in (tmp_path / "work").rglob("*") if p.is_file()}
    make_raster("sat_nocrs.tif", np.ones((4, 20, 20), np.uint16), crs=None)
    result = runner.invoke(main, ["ingest", str(config_path), "--epoch", "A"])
    assert result.exit_code == 2
    assert "sat_nocrs.tif has no CRS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in (tmp_path / "work").rglob("*") if p.is_file()} == store


def test_epochs_ingested_together_on_workers_match_one_by_one(tmp_path, make_raster, area):
    from pipeline.executors import Executor
    from pipeline.ingest import ingest_epochs

    rng = np.random.default_rng(3)
    for name in ("a.tif", "b.tif"):
        data = rng.integers(100, 4000, (3, 200, 200)).astype(np.uint16)
        make_raster(name, data, origin=(X0, Y0), nodata=0)
    rgb = {"red": 1, "green": 2, "blue": 3}
    write_quarter(
        tmp_path, {"A": [("satellite", "a.tif", rgb)], "B": [("satellite", "b.tif", rgb)]}
    )
    config = load_config(tmp_path / "quarter.toml")
    alone = {epoch: ingest_epoch(config, epoch) for epoch in ("A", "B")}

    shutil.rmtree(config.work_dir)
    with Executor("processes", workers=2, progress=False) as executor:
        together = ingest_epochs(config, ["A", "B", "A"], executor=executor)

    assert list(together) == ["A", "B"]
    for epoch in ("A", "B"):
        assert together[epoch].tiles == alone[epoch].tiles
        assert len(together[epoch].tiles) > 4
