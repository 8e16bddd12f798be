"""Atomic file writes: GeoPackages of several layers, JSON and text.

Everything is written to a temporary file in the target's folder and renamed into place, so a
reader (or a later run) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio

__all__ = ["atomic_path", "write_json", "write_layers", "write_text"]


@contextmanager
def atomic_path(
    path: str | os.PathLike, *, suffix: str | None = None, sync: bool = True
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    With ``sync`` (the default) the file is flushed to disk before the rename, so that it
    survives a power cut too; files that can be made again cheaply may skip that (a crashed
    process still leaves the old file or the new one, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent
    )
    os.close(fd)
    os.unlink(tmp)  # writers such as GDAL want to create the file themselves
    try:
        yield Path(tmp)
        if sync:
            with open(tmp, "rb+") as fh:  # one flush to disk before the rename, not one per write
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_layers(
    path: str | os.PathLike,
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    descriptions: Mapping[str, str] | None = None,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> None:
    """Write GeoDataFrames as layers of one GeoPackage 1.2, atomically.

    Layers get a spatial index, a ``geom`` geometry column and their description; polygon layers
    holding any MultiPolygon are written as MultiPolygon. ``tables`` are written as attribute-only
    tables after the layers (e.g. QGIS's ``layer_styles``).
    """
    descriptions = descriptions or {}
    with atomic_path(path) as tmp, _gdal_options(OGR_SQLITE_SYNCHRONOUS="OFF"):
        for n, (name, frame) in enumerate(layers.items()):
            multi = bool((frame.geom_type == "MultiPolygon").any())
            pyogrio.write_dataframe(
                frame,
                tmp,
                layer=name,
                driver="GPKG",
                geometry_type="MultiPolygon" if multi else "Polygon",
                promote_to_multi=multi,
                dataset_options={"VERSION": "1.2"} if n == 0 else None,
                layer_options={
                    "GEOMETRY_NAME": "geom",
                    "SPATIAL_INDEX": "YES",
                    "DESCRIPTION": descriptions.get(name, name),
                },
            )
        for name, table in (tables or {}).items():
            pyogrio.write_dataframe(
                table,
                tmp,
                layer=name,
                driver="GPKG",
                layer_options={"FID": "id", "DESCRIPTION": descriptions.get(name, name)},
            )


@contextmanager
def _gdal_options(**options: str) -> Iterator[None]:
    """Set GDAL configuration options for the block (the temporary file is synced once at the end)."""
    old = {key: pyogrio.get_gdal_config_option(key) for key in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(old)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
