"""Read the vector inputs: street-office polygons and construction permits.

Both readers return a small GeoDataFrame with fixed column names, reprojected to the grid CRS,
with valid polygonal geometries. Expected problems (missing file or field, no CRS, bad codes)
raise :class:`errors.InputError` or :class:`errors.ConfigError` with one line naming the file,
the field or value and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely

from errors import ConfigError, InputError

__all__ = ["is_safe_code", "read_offices", "read_permits"]

_CODE = re.compile(r"[A-Za-z0-9_]{1,32}")
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)]
)


def is_safe_code(code: str) -> bool:
    """True if ``code`` is a short ASCII name safe in task IDs, folder and file names.

    Letters, digits and ``_`` only (no ``-``, which separates the parts of a task ID), 1 to 32
    characters, and not a Windows device name such as ``CON`` or ``NUL``.
    """
    return bool(_CODE.fullmatch(code)) and code.upper() not in _WINDOWS_DEVICES


def read_offices(
    path: str | os.PathLike, *, code_field: str, name_field: str, crs: Any
) -> gpd.GeoDataFrame:
    """Read the street offices (街道办) as ``office_code``, ``office_name``, geometry.

    Parameters
    ----------
    path : str or os.PathLike
        A vector file (GeoPackage, shapefile, GeoJSON...); its first layer is read.
    code_field, name_field : str
        Fields holding each office's short ASCII code (used in task IDs and folder names, see
        :func:`is_safe_code`) and its name (e.g. 澳头街道). Integer codes are accepted.
    crs : pyproj.CRS, rasterio CRS or str
        The grid CRS the offices are reprojected to.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per office, ``office_code`` and ``office_name`` (str) and valid (Multi)Polygon
        geometries in ``crs``, in the file's order.

    Raises
    ------
    errors.ConfigError
        The file or a field is missing (the message names the config key to set).
    errors.InputError
        The file cannot be read, has no CRS, no features, geometries that are not polygons, or
        codes that are empty, unsafe as file names or used twice.
    """
    fields = {code_field: "[offices] code_field", name_field: "[offices] name_field"}
    frame = _read_layer(path, section="offices", fields=fields)
    if frame.empty:
        raise InputError(f"{path} has no features; it must hold one polygon per street office")
    codes = _text(frame[code_field], path=path, field=code_field)
    _check_codes(codes, path=path, field=code_field)
    names = _text(frame[name_field], path=path, field=name_field)
    out = gpd.GeoDataFrame(
        {"office_code": codes, "office_name": names},
        geometry=_polygons(frame.geometry, path=path),
        crs=frame.crs,
    )
    return out.to_crs(crs).reset_index(drop=True)


def read_permits(path: str | os.PathLike, *, id_field: str, crs: Any) -> gpd.GeoDataFrame:
    """Read approved construction permits as ``permit_id``, geometry.

    Parameters
    ----------
    path : str or os.PathLike
        A vector file; its first layer is read. It may be empty (no permits this quarter).
    id_field : str
        Field holding the permit number; several polygons may share one number.
    crs : pyproj.CRS, rasterio CRS or str
        The grid CRS the permits are reprojected to.

    Returns
    -------
    geopandas.GeoDataFrame
        ``permit_id`` (str) and valid (Multi)Polygon geometries in ``crs``.

    Raises
    ------
    errors.ConfigError
        The file or the field is missing.
    errors.InputError
        The file cannot be read, has no CRS, empty permit numbers or non-polygon geometries.
    """
    frame = _read_layer(path, section="permits", fields={id_field: "[permits] id_field"})
    ids = _text(frame[id_field], path=path, field=id_field)
    out = gpd.GeoDataFrame(
        {"permit_id": ids}, geometry=_polygons(frame.geometry, path=path), crs=frame.crs
    )
    return out.to_crs(crs).reset_index(drop=True)


def _read_layer(
    path: str | os.PathLike, *, section: str, fields: dict[str, str]
) -> gpd.GeoDataFrame:
    """Read the first layer of ``path`` and check it has ``fields`` (field -> config key) and a CRS."""
    if not Path(path).exists():
        raise ConfigError(f"{path} does not exist; check [{section}] path")
    try:
        frame = pyogrio.read_dataframe(path)
    except pyogrio.errors.DataSourceError as exc:
        reason = str(exc).splitlines()[0]
        raise InputError(f"{path} cannot be read as a vector file ({reason})") from None
    present = [c for c in frame.columns if c != frame.geometry.name]
    for field, key in fields.items():
        if field not in present:
            listed = ", ".join(present) or "none"
            raise ConfigError(f"{path} has no field {field!r} (fields: {listed}); set {key}")
    if frame.crs is None:
        raise InputError(
            f"{path} has no CRS; assign one (e.g. EPSG:4490) in QGIS or with ogr2ogr -a_srs"
        )
    return frame


def _text(values: pd.Series, *, path: str | os.PathLike, field: str) -> pd.Series:
    """``values`` as stripped strings; integral floats (1.0, as shapefiles store codes) lose the .0."""
    missing = values.isna()
    if missing.any():
        row = int(missing.to_numpy().argmax()) + 1
        raise InputError(f"{path}: feature {row} has no value in field {field!r}; fill it in")
    if pd.api.types.is_float_dtype(values) and (values % 1 == 0).all():
        values = values.astype("int64")
    text = values.astype(str).str.strip()
    blank = text == ""
    if blank.any():
        row = int(blank.to_numpy().argmax()) + 1
        raise InputError(f"{path}: feature {row} has an empty value in field {field!r}; fill it in")
    return text


def _check_codes(codes: pd.Series, *, path: str | os.PathLike, field: str) -> None:
    """Refuse codes that are unsafe as file names (see :func:`is_safe_code`) or not unique."""
    unsafe = ~codes.map(is_safe_code).astype(bool)
    if unsafe.any():
        raise InputError(
            f"{path}: office code {codes[unsafe].iloc[0]!r} (field {field!r}) is not a safe short "
            "name (it names folders and task IDs); use 1-32 ASCII letters, digits or _, or set "
            "[offices] code_field to a field of such codes"
        )
    folded = codes.str.upper()
    dup = folded.duplicated(keep=False)
    if dup.any():
        raise InputError(
            f"{path}: office code {codes[dup].iloc[0]!r} (field {field!r}) is used by "
            f"{int((folded == folded[dup].iloc[0]).sum())} features (codes must be unique, "
            "ignoring case); merge the parts of one office (QGIS: Dissolve by the code field)"
        )


def _polygons(geoms: gpd.GeoSeries, *, path: str | os.PathLike) -> gpd.GeoSeries:
    """Check ``geoms`` are non-empty polygons and repair invalid ones, keeping only their area."""
    bad = geoms.isna() | geoms.is_empty | ~geoms.geom_type.isin(["Polygon", "MultiPolygon"])
    if bad.any():
        i = int(bad.to_numpy().argmax())
        geom = geoms.iloc[i]
        what = "has no geometry" if geom is None or geom.is_empty else f"is a {geom.geom_type}"
        raise InputError(f"{path}: feature {i + 1} {what}; every feature must be a polygon")
    invalid = ~geoms.is_valid
    if invalid.any():
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(
            geoms[invalid].to_numpy(), method="structure", keep_collapsed=False
        )
    return geoms
