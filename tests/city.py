"""A tiny city for the worklist, register and feedback tests, written into a folder.

Two street offices side by side (``AT`` west, ``XQ`` east, 64 m x 64 m each), satellite images of
three epochs (``E0``, ``E1``, ``E2``) on a grid of 32 m tiles, and one config per quarter
(``q1.toml``: E0 -> E1, ``q2.toml``: E1 -> E2) sharing the work folder and the register.
The suspects of a quarter are written straight into its changes GeoPackage
(:func:`write_suspects`), so these tests do not depend on detection.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio import features

from pipeline.atomic import write_layers
from pipeline.changes import changes_path
from pipeline.config import Config, load_config

X0, Y0 = 520_000.0, 2_522_000.0  # upper-left corner of the city, EPSG:4547
EPOCHS = ("E0", "E1", "E2")
_CONFIG = """
[grid]
crs = "EPSG:4547"
resolution = 0.5
tile_size = 64
halo = 8

[paths]
work = "work"
out = "out"
register = "register.gpkg"

[offices]
path = "offices.gpkg"

[tasks]
deadline_days = 30

{epochs}
[run]
before = "{before}"
after = "{after}"
"""


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    """A box in metres east of X0 and south of Y0 (y grows southwards here)."""
    return shapely.box(X0 + x0, Y0 - y1, X0 + x1, Y0 - y0)


def write_city(root: Path, *, buildings: dict[str, list[shapely.Polygon]] | None = None) -> None:
    """Offices, one satellite image per epoch (bright roofs at ``buildings[epoch]``) and configs."""
    root.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(
        {"code": ["AT", "XQ"], "name": ["澳头街道", "西区街道"]},
        geometry=[box(0, 0, 64, 64), box(64, 0, 128, 64)],
        crs="EPSG:4547",
    ).to_file(root / "offices.gpkg")
    rng = np.random.default_rng(0)
    transform = Affine(0.5, 0, X0, 0, -0.5, Y0)
    for epoch in EPOCHS:
        data = (rng.normal(1000, 40, (4, 128, 256))).astype(np.uint16)
        data[3] = 3000
        roofs = (buildings or {}).get(epoch, [])
        if roofs:
            roof = features.rasterize(roofs, out_shape=(128, 256), transform=transform)
            data[:3, roof > 0] = 2500
        with rasterio.open(
            root / f"sat_{epoch}.tif",
            "w",
            driver="GTiff",
            width=256,
            height=128,
            count=4,
            dtype="uint16",
            crs="EPSG:4547",
            transform=transform,
            nodata=0,
        ) as dst:
            dst.write(data)
    epochs = "".join(
        f'[[epochs]]\nid = "{e}"\ndate = "2024-0{3 * n + 3}-20"\n[[epochs.sources]]\n'
        f'kind = "satellite"\npath = "sat_{e}.tif"\nbands = {{ blue = 1, green = 2, red = 3, nir = 4 }}\n'
        for n, e in enumerate(EPOCHS)
    )
    for name, before, after in (("q1", "E0", "E1"), ("q2", "E1", "E2")):
        (root / f"{name}.toml").write_text(
            _CONFIG.format(epochs=epochs, before=before, after=after), encoding="utf-8"
        )


def quarter(root: Path, name: str) -> Config:
    return load_config(root / f"{name}.toml")


def write_suspects(config: Config, rows: list[tuple]) -> None:
    """Write a quarter's changes: rows of (suspect_id, geometry, change_type, score)."""
    ids, geoms, types, scores = zip(*rows, strict=True) if rows else ((), (), (), ())
    suspects = gpd.GeoDataFrame(
        {
            "suspect_id": list(ids),
            "tile": "r0_c0",
            "change_type": list(types),
            "area_m2": shapely.area(np.asarray(geoms, dtype=object)),
            "height_gain_m": np.nan,
            "score": list(scores),
        },
        geometry=list(geoms),
        crs="EPSG:4547",
    )
    tiles = gpd.GeoDataFrame({"tile": ["r0_c0"]}, geometry=[box(0, 0, 128, 64)], crs="EPSG:4547")
    write_layers(changes_path(config), {"suspects": suspects, "tiles": tiles})


def fill_worklist(path: Path, out: Path, answers: dict[str, dict]) -> Path:
    """Fill a returned xlsx worklist as an office would: ``answers`` maps task IDs to cells by
    header (e.g. ``{"核查结果": "违法建设"}``)."""
    import openpyxl

    book = openpyxl.load_workbook(path)
    sheet = book.active
    headers = [c.value for c in sheet[1]]
    for row in range(2, sheet.max_row + 1):
        for title, value in answers.get(sheet.cell(row=row, column=1).value, {}).items():
            sheet.cell(row=row, column=headers.index(title) + 1, value=value)
    book.save(out)
    return out
