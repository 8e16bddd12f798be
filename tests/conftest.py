"""Shared fixtures: tiny GeoTIFFs and GeoPackages written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture
def make_raster(tmp_path):
    """Factory: write a GeoTIFF from an array; returns its path.

    ``data`` is (bands, rows, cols) or (rows, cols); ``origin`` the upper-left (x, y) in ``crs``.
    """

    def _make(
        name: str,
        data: np.ndarray,
        *,
        crs: str | None = "EPSG:4547",
        origin: tuple[float, float] = (520_000.0, 2_522_000.0),
        res: float = 0.5,
        nodata: float | None = None,
        colorinterp=None,
        tiled: bool = True,
    ) -> Path:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = dict(
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype,
            transform=Affine(res, 0, origin[0], 0, -res, origin[1]),
            nodata=nodata,
        )
        if crs is not None:
            profile["crs"] = crs
        if tiled and data.shape[1] >= 16 and data.shape[2] >= 16:
            profile.update(
                tiled=True,
                blockxsize=16 * (data.shape[2] // 16 or 1) if data.shape[2] < 256 else 256,
                blockysize=16 * (data.shape[1] // 16 or 1) if data.shape[1] < 256 else 256,
            )
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colorinterp is not None:
                dst.colorinterp = colorinterp
        return path

    return _make


@pytest.fixture
def make_offices(tmp_path):
    """Factory: a GeoPackage of office polygons (boxes in ``crs``) with code and name fields."""

    def _make(
        boxes: dict[str, tuple[float, float, float, float]],
        *,
        crs="EPSG:4547",
        name="offices.gpkg",
        code_field="code",
        name_field="name",
    ) -> Path:
        path = tmp_path / name
        gdf = gpd.GeoDataFrame(
            {code_field: list(boxes), name_field: [f"{c}街道" for c in boxes]},
            geometry=[shapely.box(*b) for b in boxes.values()],
            crs=crs,
        )
        gdf.to_file(path, driver="GPKG")
        return path

    return _make
