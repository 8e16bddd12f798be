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

__all__ = ["atomic_path", "write_json", "write_layers", "write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=suffix or path.suffix, dir=path.parent
    )
    os.close(fd)
    os.unlink(tmp)  # writers such as GDAL want to create the file themselves
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_layers(
    path: str | os.PathLike,
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Write GeoDataFrames as layers of one GeoPackage (1.2, spatial index), atomically."""
    descriptions = descriptions or {}
    with atomic_path(path) as tmp:
        for name, frame in layers.items():
            opts: dict[str, Any] = {"VERSION": "1.2", "SPATIAL_INDEX": "YES"}
            if name in descriptions:
                opts["DESCRIPTION"] = descriptions[name]
            frame.to_file(tmp, layer=name, driver="GPKG", engine="pyogrio", layer_options=opts)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
