"""Real imagery in two CRSs: the 2011 Joplin tornado (xView2), pre-event tiles in EPSG:26915 and
post-event tiles in EPSG:4326, ingested onto one EPSG:32615 0.6 m grid and run through the batch.

Skipped when ../shared/realdata is not there. The data is read in place, never copied.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import REALDATA
from quarters import write_quarter

from detect import estimate_shift
from detect.align import registration_image
from pipeline import batch
from pipeline.config import load_config
from pipeline.executors import Executor
from pipeline.ingest import load_index
from tiles import describe_source, read_tile

JOPLIN = REALDATA / "xView2-Joplin"
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(not JOPLIN.is_dir(), reason="../shared/realdata is not available"),
]
# the overlap of the pre and post footprints, in EPSG:32615
OVERLAP = (366_700.0, 4_103_300.0, 367_850.0, 4_104_240.0)


@pytest.fixture(scope="module")
def joplin(tmp_path_factory):
    root = tmp_path_factory.mktemp("joplin")
    gpd.GeoDataFrame(
        {"code": ["JP"], "name": ["Joplin"]}, geometry=[shapely.box(*OVERLAP)], crs="EPSG:32615"
    ).to_file(root / "offices.gpkg")
    write_quarter(
        root,
        {
            "pre": [("satellite", f"{JOPLIN}/input_pre/*.tif", None)],
            "post": [("satellite", f"{JOPLIN}/input_post/*.tif", None)],
        },
        crs="EPSG:32615",
        resolution=0.6,
        tile_size=1024,
        halo=64,
        offices={"code_field": "code", "name_field": "name"},
    )
    config = load_config(root / "quarter.toml")
    report = batch.run(config, executor=Executor("serial", progress=False))
    return config, report


def _block_shifts(config, size=512):
    """Phase-correlation shift (row, col, confidence) of post against pre per fully valid block."""
    work = config.work_dir
    pre, post = load_index(work, "pre"), load_index(work, "post")
    out = []
    for name in sorted(set(pre.tiles) & set(post.tiles)):
        a, va, _ = read_tile(work / "epochs/pre" / pre.tiles[name]["satellite"]["file"])
        b, vb, _ = read_tile(work / "epochs/post" / post.tiles[name]["satellite"]["file"])
        valid = va & vb
        for i in range(0, valid.shape[0] - size + 1, size):
            for j in range(0, valid.shape[1] - size + 1, size):
                v = valid[i : i + size, j : j + size]
                if not v.all():
                    continue
                block = np.s_[:, i : i + size, j : j + size]
                s = estimate_shift(
                    registration_image(a[block].astype(np.float32), v),
                    registration_image(b[block].astype(np.float32), v),
                )
                out.append((s.row, s.col, s.confidence))
    return np.array(out)


def test_both_crs_land_on_the_grid(joplin):
    config, report = joplin
    pre, post = load_index(config.work_dir, "pre"), load_index(config.work_dir, "post")
    assert len(pre.tiles) >= 4 and len(post.tiles) >= 4
    assert report.counts["suspects"] > 0


def test_pre_and_post_line_up_on_undamaged_ground(joplin):
    config, _ = joplin
    shifts = _block_shifts(config)
    # blocks the tornado did not change correlate cleanly; damaged ones do not
    steady = shifts[shifts[:, 2] >= 0.3]
    assert len(steady) >= 3
    residual = np.hypot(np.median(steady[:, 0]), np.median(steady[:, 1]))
    assert residual <= 1.0, steady


def test_suspects_lie_on_the_overlap_and_on_buildings(joplin):
    config, report = joplin
    gpkg = report.out_dir / f"{config.quarter}.gpkg"
    suspects = gpd.read_file(gpkg, layer="suspects")
    assert len(suspects) > 0
    # where both dates have imagery: the intersection of the two epochs' source footprints
    grid = config.grid_spec
    footprint = {
        epoch: shapely.union_all(
            [
                shapely.box(*describe_source(f, grid=grid).bounds)
                for source in config.epoch(epoch).sources
                for f in config.source_files(epoch, source)
            ]
        )
        for epoch in ("pre", "post")
    }
    overlap = footprint["pre"].intersection(footprint["post"]).buffer(1.0)
    assert suspects.within(overlap).all()
    footprints = gpd.read_file(JOPLIN / "vectors" / "joplin_building_footprints.geojson").to_crs(
        suspects.crs
    )
    near = shapely.union_all(footprints.geometry.buffer(5.0).to_numpy())
    on_buildings = suspects.intersects(near)
    assert on_buildings.mean() >= 0.5, on_buildings.mean()
