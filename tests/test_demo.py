"""The synthetic demo quarters: formats, configurations, truth, and what the imagery shows."""

from __future__ import annotations

import re
import tomllib

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.features import rasterize
from rasterio.merge import merge
from skimage.registration import phase_cross_correlation

from cli import main
from errors import InputError
from pipeline.config import load_config
from pipeline.demo import CASES, EPOCHS, KINDS, OFFICES, _toml, make_demo

SIZE = 1024  # the smallest demo: 512 m x 512 m
BEFORE, AFTER, LATER = (epoch for epoch, _ in EPOCHS)
QUARTERS = {0: 1, 1: 2, 2: 2}  # seed -> quarters of the demos the tests share


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return {
        seed: make_demo(tmp_path_factory.mktemp(f"seed{seed}"), size=SIZE, seed=seed, quarters=q)
        for seed, q in QUARTERS.items()
    }


@pytest.fixture(params=[0, 1], ids=["seed0", "seed1-2quarters"])
def demo(request, demos):
    return demos[request.param]


@pytest.fixture(params=[1, 2], ids=["seed1", "seed2"])
def two(request, demos):
    """A demo of two quarters."""
    return demos[request.param]


def _truth(demo, layer="truth") -> gpd.GeoDataFrame:
    return gpd.read_file(demo.truth, layer=layer)


def _epochs(demo) -> list[str]:
    return [epoch for epoch, _ in EPOCHS[: len(demo.configs) + 1]]


def _quarters(demo):
    """(truth layer, before epoch, after epoch) of each quarter."""
    epochs = _epochs(demo)
    return list(zip(demo.truth_layers, epochs[:-1], epochs[1:], strict=True))


def _satellite(demo, epoch) -> tuple[np.ndarray, rasterio.Affine]:
    """Both satellite files of an epoch mosaicked onto the area, float (4, h, w); 0 = nodata."""
    paths = sorted((demo.root / "imagery").glob(f"sat_{epoch}_*.tif"))
    sources = [rasterio.open(p) for p in paths]
    try:
        data, transform = merge(sources, bounds=demo.bounds)
    finally:
        for src in sources:
            src.close()
    return data.astype(float), transform


def _relative_change(before: np.ndarray, after: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """|after - a linear fit of after on before|, averaged over the visible bands, (h, w)."""
    out = np.zeros(before.shape[1:])
    for k in range(3):
        fit = np.polyfit(before[k][valid][::7], after[k][valid][::7], 1)
        out += np.abs(after[k] - np.polyval(fit, before[k])) / 3
    return out


def _mask(geom, shape, transform) -> np.ndarray:
    return rasterize([geom], out_shape=shape, transform=transform).astype(bool)


def test_satellite_files_are_two_overlapping_uint16_halves(demo):
    for epoch in _epochs(demo):
        west, east = (
            rasterio.open(demo.root / "imagery" / f"sat_{epoch}_{h}.tif") for h in ("w", "e")
        )
        with west, east:
            for src in (west, east):
                assert src.crs.to_epsg() == 4547
                assert src.res == (0.5, 0.5)
                assert src.count == 4 and set(src.dtypes) == {"uint16"}
                assert src.nodata == 0
                assert src.colorinterp[:3] == (ColorInterp.blue, ColorInterp.green, ColorInterp.red)
                assert src.descriptions == ("blue", "green", "red", "nir")
                assert src.block_shapes[0] == (512, 512)
                assert src.compression.name == "deflate"
            assert west.bounds.right - east.bounds.left == pytest.approx(100 * 0.5)
            assert west.height == east.height == SIZE
            assert (west.bounds.left, west.bounds.bottom, east.bounds.right, west.bounds.top) == (
                pytest.approx(demo.bounds)
            )


def test_the_area_is_off_the_tile_grid_and_a_tile_corner_lies_inside(demo):
    left, bottom, right, top = demo.bounds
    assert right - left == top - bottom == SIZE * 0.5
    assert left % 512 != 0 and top % 512 != 0
    xs = np.arange(np.ceil(left / 512), np.floor(right / 512) + 1) * 512
    ys = np.arange(np.ceil(bottom / 512), np.floor(top / 512) + 1) * 512
    corners = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    new = _truth(demo).query("kind == 'new_building'").geometry.to_numpy()
    inside = shapely.contains_xy(new[:, None], corners[:, 0], corners[:, 1])
    assert inside.any(), "no new building straddles a corner of the 512 m tiles"


def test_nodata_lies_along_ragged_edges_only(demo):
    for epoch in _epochs(demo):
        data, _ = _satellite(demo, epoch)
        valid = (data > 0).all(axis=0)
        assert (data > 0).any(axis=0).sum() == valid.sum(), "bands disagree on nodata"
        assert valid[45:-45, 45:-45].all(), "the mosaic has holes inside the area"
        edge = ~valid
        assert 0.005 < edge.mean() < 0.16
        depth = np.argmax(valid[45:-45], axis=1)  # nodata run at the west edge, per row
        assert depth.max() <= 40 and len(np.unique(depth)) > 5, "the edge is not ragged"
        west = rasterio.open(demo.root / "imagery" / f"sat_{epoch}_w.tif")
        with west:
            inner_edge = west.read(1)[:, -50:] == 0
        assert inner_edge.any() and not inner_edge[45:-45, :5].any()


def test_drone_is_rgba_in_utm_over_part_of_the_area(demo):
    grids = set()
    for epoch in _epochs(demo):
        with rasterio.open(demo.root / "imagery" / f"drone_{epoch}.tif") as src:
            assert src.crs.to_epsg() == 32650
            assert src.res == pytest.approx((0.1, 0.1))
            assert src.count == 4 and set(src.dtypes) == {"uint8"}
            assert src.colorinterp == (
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            )
            assert src.compression.name == "deflate" and src.block_shapes[0] == (512, 512)
            rgba = src.read()
            np.testing.assert_array_equal(src.dataset_mask(), rgba[3])
            assert MaskFlags.alpha in src.mask_flag_enums[0]
            footprint_m2 = (rgba[3] == 255).sum() * 0.01
            grids.add((src.transform, src.shape))
        assert set(np.unique(rgba[3])) == {0, 255}
        assert not rgba[:3, :, :][:, rgba[3] == 0].any()
        assert 0.05 * (SIZE * 0.5) ** 2 < footprint_m2 < 0.5 * (SIZE * 0.5) ** 2
    assert len(grids) == 1, "the flights' orthomosaics are not on one grid"


def test_dsm_is_float_heights_with_nodata_outside_the_drone_block(demo):
    for epoch in _epochs(demo):
        with (
            rasterio.open(demo.root / "imagery" / f"dsm_{epoch}.tif") as dsm,
            rasterio.open(demo.root / "imagery" / f"drone_{epoch}.tif") as drone,
        ):
            assert dsm.crs.to_epsg() == 32650
            assert dsm.res == pytest.approx((0.2, 0.2))
            assert dsm.count == 1 and dsm.dtypes[0] == "float32" and dsm.nodata == -9999
            z = dsm.read(1, masked=True)
            assert dsm.bounds == pytest.approx(drone.bounds)
            alpha = drone.read(4, out_shape=z.shape)
        assert 0 < z.min() and z.max() < 80, "ground is 5-40 m, roofs and trees at most 20 m up"
        assert z.mask[alpha == 0].mean() > 0.99
        assert (~z.mask[alpha == 255]).mean() > 0.8  # water is nodata too


def test_config_round_trips_and_names_existing_files(demo):
    assert demo.config == demo.configs[0] == demo.root / "quarter.toml"
    config = tomllib.loads(demo.config.read_text(encoding="utf-8"))
    root = demo.config.parent
    assert config["grid"] == {"crs": "EPSG:4547", "resolution": 0.5, "tile_size": 1024, "halo": 64}
    assert config["paths"] == {"work": "work", "out": "out", "register": "register.gpkg"}
    assert config["run"] == {"before": BEFORE, "after": AFTER}
    assert config["detect"] == {"min_area_m2": 20}
    assert (root / config["offices"]["path"]).is_file()
    assert (root / config["permits"]["path"]).is_file()
    assert [e["id"] for e in config["epochs"]] == _epochs(demo)
    assert [(e["id"], e["date"]) for e in config["epochs"]][:2] == [
        (BEFORE, "2024-03-20"),
        (AFTER, "2024-06-20"),
    ]
    for epoch in config["epochs"]:
        sources = {s["kind"]: s for s in epoch["sources"]}
        assert list(sources) == ["satellite", "drone", "dsm"]
        assert sources["satellite"]["bands"] == {"blue": 1, "green": 2, "red": 3, "nir": 4}
        assert sources["drone"]["bands"] == {"red": 1, "green": 2, "blue": 3}
        assert len(list(root.glob(sources["satellite"]["path"]))) == 2
        assert (root / sources["drone"]["path"]).is_file()
        assert (root / sources["dsm"]["path"]).is_file()


def test_toml_writer_round_trips_awkward_values():
    doc = {
        "title": 'quote " backslash \\ tab \t 澳头街道',
        "grid": {"resolution": 0.5, "tiny": 1e-7, "flag": False, "size": 1024},
        "list": {"codes": ["AT", "XQ"], "inline": {"a b": 1, "c": [1.5, 2]}},
        "epochs": [
            {"id": "2024Q1", "sources": [{"kind": "drone", "bands": {"red": 1}}, {"kind": "dsm"}]},
            {"id": "2024Q2", "sources": [{"kind": "satellite"}]},
        ],
    }
    assert tomllib.loads(_toml(doc)) == doc


def test_truth_has_every_kind_counts_and_a_third_in_the_drone_block(demo):
    truth = _truth(demo)
    assert truth.crs.to_epsg() == 4547
    assert set(truth.kind) == set(KINDS)
    assert (truth.kind == "new_building").sum() >= 2
    assert truth.geometry.is_valid.all()
    footprint = _truth(demo, "nuisance").set_index("kind").geometry["drone_footprint"]
    np.testing.assert_array_equal(truth.in_drone, truth.geometry.within(footprint))
    assert truth.in_drone.mean() >= 1 / 3
    left, bottom, right, top = demo.bounds
    assert truth.geometry.within(shapely.box(left + 25, bottom + 25, right - 25, top - 25)).all()
    area = truth.geometry.area
    assert (area[truth.kind == "land_clearing"] >= 300).all()
    assert area[truth.kind == "new_building"].between(100, 35 * 35).all()
    assert (area >= 20).all()
    built = truth.kind != "land_clearing"
    assert truth.height_m[built].between(3, 20).all()
    pairs = shapely.STRtree(truth.geometry.to_numpy()).query(
        truth.geometry.to_numpy(), predicate="intersects"
    )
    np.testing.assert_array_equal(pairs[0], pairs[1])  # no two changes touch


def test_permits_cover_exactly_the_permitted_new_buildings(demo):
    layers = [_truth(demo, layer) for layer in demo.truth_layers]
    assert all(layer.permitted.any() for layer in layers)
    truth = pd.concat(layers, ignore_index=True)
    permits = gpd.read_file(demo.permits)
    assert permits.crs.to_epsg() == 4547
    assert permits.permit_id.str.fullmatch(r"HZ-2024-\d{4}").all()
    assert permits.permit_id.is_unique
    assert set(truth.kind[truth.permitted]) == {"new_building"}
    assert truth.permitted.sum() == len(permits)
    covered = shapely.STRtree(permits.geometry.to_numpy()).query(
        truth.geometry.to_numpy(), predicate="intersects"
    )[0]
    np.testing.assert_array_equal(np.isin(np.arange(len(truth)), covered), truth.permitted)
    for geom in truth.geometry[truth.permitted]:
        permit = permits.geometry[permits.intersects(geom)].item()
        assert permit.contains(geom) and permit.area > geom.area


def test_offices_tile_the_area_in_cgcs2000_geographic(demo):
    offices = gpd.read_file(demo.offices)
    assert offices.crs.to_epsg() == 4490
    assert list(zip(offices.code, offices.name, strict=True)) == list(OFFICES)
    lon, lat = offices.geometry.union_all().centroid.coords[0]
    assert 114 < lon < 115 and 22 < lat < 23.5  # Huizhou
    projected = offices.to_crs(4547)
    assert projected.union_all().buffer(0.01).contains(shapely.box(*demo.bounds))
    for k in range(3):
        for j in range(k + 1, 3):
            assert projected.geometry[k].intersection(projected.geometry[j]).area < 1.0
    assert (projected.intersection(shapely.box(*demo.bounds)).area > 0.1 * (SIZE * 0.5) ** 2).all()


def test_planted_changes_show_in_the_satellite_scenes(demo):
    for layer, first, second in _quarters(demo):
        before, transform = _satellite(demo, first)
        after, _ = _satellite(demo, second)
        valid = (before[0] > 0) & (after[0] > 0)
        change = _relative_change(before, after, valid)
        background = np.median(change[valid])
        for geom, kind in _truth(demo, layer)[["geometry", "kind"]].to_numpy():
            inside = _mask(geom.buffer(-1.5), change.shape, transform)  # clear of misregistration
            assert change[inside].mean() > 3 * background, (layer, kind)


def test_cloud_and_its_shadow_are_in_one_epoch_away_from_changes(demo):
    nuisance = _truth(demo, "nuisance").set_index("kind")
    assert set(nuisance.epoch.dropna()) == {AFTER}
    cloud, shadow = nuisance.geometry["cloud"], nuisance.geometry["cloud_shadow"]
    assert not cloud.intersects(nuisance.geometry["drone_footprint"])
    assert not _truth(demo).intersects(cloud.union(shadow)).any()
    before, transform = _satellite(demo, BEFORE)
    after, _ = _satellite(demo, AFTER)
    valid = (before[0] > 0) & (after[0] > 0)
    core = _mask(cloud.buffer(-10), valid.shape, transform)
    assert after[0][core].mean() > 3500 and before[0][core].mean() < 2000
    dark = _mask(shadow.buffer(-10).difference(cloud.buffer(10)), valid.shape, transform)
    assert dark.sum() > 200
    clear = valid & ~_mask(cloud.union(shadow).buffer(20), valid.shape, transform)
    for k in range(3):
        fit = np.polyfit(before[k][clear][::7], after[k][clear][::7], 1)
        assert after[k][dark].mean() < 0.7 * np.polyval(fit, before[k][dark]).mean()


def test_later_scenes_are_misregistered_by_the_stated_shifts(demo):
    first, *later = _epochs(demo)
    assert len(demo.shifts_px) == len(later) and demo.shift_px == demo.shifts_px[0]
    before, _ = _satellite(demo, first)
    window = np.s_[2, 200:-200, 200:-200]
    for epoch, shift in zip(later, demo.shifts_px, strict=True):
        assert 1.0 <= np.hypot(*shift) <= 3.0
        after, _ = _satellite(demo, epoch)
        found, _, _ = phase_cross_correlation(before[window], after[window], upsample_factor=20)
        np.testing.assert_allclose(-found[::-1], shift, atol=0.35)


def test_dsm_shows_the_height_of_buildings_built_and_removed(demo):
    heights = {}
    for epoch in _epochs(demo):
        with rasterio.open(demo.root / "imagery" / f"dsm_{epoch}.tif") as src:
            heights[epoch] = (src.read(1, masked=True), src.transform)
    for layer, first, second in _quarters(demo):
        truth = _truth(demo, layer).to_crs(32650)
        built = truth[truth.in_drone & (truth.kind != "land_clearing")]
        assert len(built) >= 2
        (z0, transform), (z1, _) = heights[first], heights[second]
        datum = np.ma.median(z1 - z0)  # the flights' height references differ a little
        for geom, kind, height in built[["geometry", "kind", "height_m"]].to_numpy():
            inside = _mask(geom.buffer(-1.0), z0.shape, transform)
            gain = np.ma.median(z1[inside] - z0[inside]) - datum
            expected = height if kind in ("new_building", "extension") else -height
            assert gain == pytest.approx(expected, abs=1.0), (layer, kind)


def test_second_config_runs_2024Q2_to_2024Q3_on_the_same_stores_and_register(two):
    first, second = two.configs
    assert second == two.root / f"quarter_{LATER}.toml"
    one, other = (tomllib.loads(path.read_text(encoding="utf-8")) for path in two.configs)
    assert other["run"] == {"before": AFTER, "after": LATER}
    assert {**other, "run": one["run"]} == one
    assert [(e["id"], e["date"]) for e in other["epochs"]] == list(EPOCHS)
    assert EPOCHS[2] == (LATER, "2024-09-20")
    config, earlier = load_config(second), load_config(first)
    assert (config.quarter, earlier.quarter) == (LATER, AFTER)
    assert (config.require_run().before, config.require_run().after) == (AFTER, LATER)
    assert (config.work_dir, config.out_dir) == (earlier.work_dir, earlier.out_dir)
    register = config.resolve(config.paths.register_path)
    assert register == earlier.resolve(earlier.paths.register_path)


def test_second_quarter_follows_up_earlier_buildings_and_plants_new_changes(two):
    assert two.truth_layers == ("truth", f"truth_{LATER}")
    first, truth = _truth(two), _truth(two, f"truth_{LATER}")
    assert truth.crs.to_epsg() == 4547 and truth.geometry.is_valid.all()
    assert list(truth.columns) == [
        *("kind", "permitted", "in_drone", "height_m", "case", "prior", "geometry")
    ]
    assert set(truth.case) == set(CASES)
    footprint = _truth(two, "nuisance").set_index("kind").geometry["drone_footprint"]
    np.testing.assert_array_equal(truth.in_drone, truth.geometry.within(footprint))
    left, bottom, right, top = two.bounds
    assert truth.geometry.within(shapely.box(left + 25, bottom + 25, right - 25, top - 25)).all()

    follow = truth[truth.case != "new"]
    assert set(follow.in_drone) == {True, False}
    assert follow.prior.notna().all() and follow.prior.is_unique
    prior = first.loc[follow.prior.astype(int)].set_index(follow.index)
    assert prior.kind.isin(["new_building", "extension"]).all() and not prior.permitted.any()
    shared = follow.geometry.intersection(prior.geometry).area
    assert (shared > 0.99 * follow.geometry.area).all()  # the same building
    grown = follow.case == "continued"
    assert (follow.kind[grown] == "extension").all()
    assert follow.height_m[grown].round(6).isin([3.2, 6.4]).all()  # storeys added
    assert (follow.kind[~grown] == "demolition").all()
    np.testing.assert_allclose(follow.height_m[~grown], prior.height_m[~grown])
    assert not follow.permitted.any()

    new = truth[truth.case == "new"]
    assert set(new.kind) == set(KINDS) and new.prior.isna().all()
    assert set(new.kind[new.permitted]) == {"new_building"} and not new.permitted.all()
    assert len(new) <= len(first)  # about half as many, at least one of each kind
    assert (new.geometry.area >= 20).all()
    assert (new.geometry.area[new.kind == "land_clearing"] >= 300).all()
    assert new.height_m[new.kind != "land_clearing"].between(3, 20).all()
    changes = np.concatenate([first.geometry.to_numpy(), new.geometry.to_numpy()])
    pairs = shapely.STRtree(changes).query(changes, predicate="intersects")
    np.testing.assert_array_equal(pairs[0], pairs[1])  # apart from each other and from Q1's


def test_same_seed_same_rasters_other_seed_other_rasters(tmp_path, demos):
    again = make_demo(tmp_path, size=SIZE, seed=1)  # one quarter; demos[1] has two
    rasters = sorted(p.name for p in (again.root / "imagery").glob("*.tif"))
    assert len(rasters) == 8 and not any(LATER in name for name in rasters)
    for name in rasters:
        with (
            rasterio.open(demos[1].root / "imagery" / name) as a,
            rasterio.open(again.root / "imagery" / name) as b,
        ):
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.profile == b.profile and a.colorinterp == b.colorinterp
    for layer in ("truth", "nuisance"):
        assert _truth(demos[1], layer).equals(_truth(again, layer))
    assert gpd.read_file(demos[1].offices).equals(gpd.read_file(again.offices))
    permits = gpd.read_file(again.permits)
    assert gpd.read_file(demos[1].permits).iloc[: len(permits)].equals(permits)
    assert demos[1].shift_px == again.shift_px
    one, two = (tomllib.loads(d.config.read_text(encoding="utf-8")) for d in (again, demos[1]))
    assert two["epochs"][:2] == one["epochs"] and {**two, "epochs": one["epochs"]} == one
    with (
        rasterio.open(demos[0].root / "imagery" / f"sat_{AFTER}_w.tif") as a,
        rasterio.open(demos[1].root / "imagery" / f"sat_{AFTER}_w.tif") as b,
    ):
        assert a.shape == b.shape and not np.array_equal(a.read(), b.read())
    assert not _truth(demos[0]).geometry.geom_equals(_truth(demos[1]).geometry).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_no_temporary_files_are_left(demos, seed):
    root = demos[seed].root
    assert not [p for p in root.rglob(".*")]
    second = {"quarter_2024Q3.toml"} if QUARTERS[seed] == 2 else set()
    assert {p.name for p in root.iterdir()} == {
        "imagery",
        "quarter.toml",
        "truth.gpkg",
        "offices.gpkg",
        "permits.gpkg",
        *second,
    }
    assert len(list((root / "imagery").iterdir())) == 4 * (QUARTERS[seed] + 1)


@pytest.mark.slow
def test_cli_runs_both_quarters_and_the_second_links_the_earlier_cases(tmp_path):
    args = ["demo", "--out", str(tmp_path), "--size", str(SIZE), "--seed", "1", "--quarters", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    output = result.output
    assert re.findall(r"^quarter (\w+):", output, re.M) == [AFTER, LATER]
    for quarter in (AFTER, LATER):
        assert (tmp_path / "out" / quarter / f"{quarter}.gpkg").is_file()
    later = gpd.read_file(tmp_path / "truth.gpkg", layer=f"truth_{LATER}")
    planted = (~later.permitted & (later.case == "new")).sum()
    assert f"{planted}/{planted} new changes found" in output
    followed = (later.case != "new").sum()
    seen = f"earlier cases seen again: {followed}/{followed} linked to their task, 0 issued again"
    assert seen in output
    tasks = gpd.read_file(tmp_path / "out" / LATER / f"{LATER}.gpkg", layer="tasks")
    assert tasks.task_id.str.startswith(f"{LATER}-").all()


def test_cli_takes_one_or_two_quarters(tmp_path):
    args = ["demo", "--out", str(tmp_path / "demo"), "--quarters", "3", "--no-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--quarters" in result.output
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"size": 512}, "--size 1024"),
        ({"size": 2048.0}, "--size"),
        ({"size": True}, "--size"),
        ({"seed": -1}, "--seed"),
        ({"seed": "7"}, "--seed"),
        ({"quarters": 3}, "--quarters 1 or 2"),
        ({"quarters": 0}, "--quarters"),
        ({"quarters": 2.0}, "--quarters"),
    ],
)
def test_bad_size_seed_or_quarters_is_a_one_line_input_error(tmp_path, kwargs, words):
    out = tmp_path / "demo"
    with pytest.raises(InputError) as caught:
        make_demo(out, **kwargs)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert not out.exists()


def test_output_that_is_a_file_is_an_input_error(tmp_path):
    path = tmp_path / "quarter"
    path.write_text("not a folder")
    with pytest.raises(InputError, match="is a file"):
        make_demo(path, size=SIZE)
