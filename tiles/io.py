"""Raster I/O onto the grid: describe source files, read them onto a tile, write the tile store.

Readers take paths or already-open datasets and return numpy arrays on a tile's haloed window:
``(bands, rows, cols)`` data and a ``(rows, cols)`` boolean validity mask. Reprojection is done by
GDAL through :class:`rasterio.vrt.WarpedVRT`, reading only what the window needs.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioIOError, WindowError
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from errors import InputError

from .grid import Bounds, Grid, TileId

__all__ = [
    "SourceInfo",
    "all_valid",
    "describe_source",
    "read_onto_tile",
    "read_tile",
    "write_tile",
]

#: GDAL's block cache per process (MB), unless GDAL_CACHEMAX is set: sources stay open between
#: tiles (see _source), so neighbouring tiles, which share the blocks of their halos, decode
#: each block once; bounded so that a worker's memory does not grow with the sources.
os.environ.setdefault("GDAL_CACHEMAX", "256")
#: Side (px) of the blocks of stored tiles. Image chips read small windows of the store, and
#: every block a window touches is decoded whole: with 128 px blocks the chips' reads take
#: about 30 % less time than with 256 px ones, and whole tiles write and read as fast, to
#: the same size.
_BLOCK = 128
#: Source files kept open per thread (a GDAL dataset is not shared between threads).
_OPEN_SOURCES = 8
_open = threading.local()


@dataclass(frozen=True)
class SourceInfo:
    """What tuban needs to know about one raster file, read once from its header."""

    path: str
    count: int
    dtype: str
    crs_wkt: str
    resolution: tuple[float, float]  # source pixel size (x, y) in source CRS units
    bounds: Bounds  # footprint in grid CRS metres
    colorinterp: tuple[str, ...]
    alpha: int | None  # 1-based index of an alpha band, if any
    size: int  # bytes on disk
    mtime_ns: int

    @property
    def signature(self) -> tuple[str, int, int]:
        """A cheap fingerprint that changes when the file is rewritten."""
        return (self.path, self.size, self.mtime_ns)


def describe_source(path: str | os.PathLike, *, grid: Grid) -> SourceInfo:
    """Read a raster's header and its footprint on ``grid``.

    Raises
    ------
    InputError
        When the file is missing, not a readable raster, or has no CRS.
    """
    path = os.fspath(path)
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(
                    f"{path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32650 {path})"
                )
            left, bottom, right, top = transform_bounds(
                src.crs, grid.rio_crs, *src.bounds, densify_pts=21
            )
            interp = tuple(ci.name for ci in src.colorinterp)
            alpha = next(
                (i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha), None
            )
            info = SourceInfo(
                path=path,
                count=src.count,
                dtype=src.dtypes[0],
                crs_wkt=src.crs.to_wkt(),
                resolution=(abs(src.transform.a), abs(src.transform.e)),
                bounds=Bounds(left, bottom, right, top),
                colorinterp=interp,
                alpha=alpha,
                size=os.path.getsize(path),
                mtime_ns=os.stat(path).st_mtime_ns,
            )
    except RasterioIOError as exc:
        reason = str(exc).split("\n")[0]
        raise InputError(
            f"{path} is not a readable raster ({reason}); check or replace the file"
        ) from None
    return info


def _resampling_for(info: SourceInfo, grid: Grid, *, categorical: bool) -> Resampling:
    if categorical:
        return Resampling.nearest
    # Averaging when the source is much finer than the grid; bilinear otherwise.
    src_m = info.resolution[0] if _is_metric(info) else info.resolution[0] * 111_000.0
    return Resampling.average if src_m * 2.0 < grid.resolution else Resampling.bilinear


def _is_metric(info: SourceInfo) -> bool:
    return rasterio.crs.CRS.from_wkt(info.crs_wkt).is_projected


def read_onto_tile(
    sources: Sequence[SourceInfo],
    grid: Grid,
    tile: TileId,
    *,
    bands: Sequence[int],
    categorical: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Mosaic ``sources`` onto the haloed window of ``tile``.

    Each file is warped with :class:`~rasterio.vrt.WarpedVRT` straight onto the tile's window; the
    first file that is valid at a pixel wins. Alpha bands, nodata values and internal masks all mark
    pixels invalid.

    Parameters
    ----------
    sources : sequence of SourceInfo
        Files of one source, in priority order.
    grid, tile
        Where to read.
    bands : sequence of int
        1-based band indexes to read from every file.
    categorical : bool
        Nearest-neighbour resampling (masks, classes) instead of bilinear/average.

    Returns
    -------
    data : ndarray, shape (len(bands), n, n), dtype of the sources
        ``n = grid.window_size``; zero where invalid.
    valid : ndarray of bool, shape (n, n)
    used : list of str
        Paths of the files that contributed at least one valid pixel.
    """
    n = grid.window_size
    transform = grid.transform(tile, halo=True)
    window_bounds = grid.bounds(tile, halo=True)
    dtype = np.dtype(sources[0].dtype) if sources else np.dtype("float32")
    data = np.zeros((len(bands), n, n), dtype=dtype)
    valid = np.zeros((n, n), dtype=bool)
    used: list[str] = []
    for info in sources:
        if info.bounds.intersection(window_bounds) is None:
            continue
        file_data, file_valid = _warp_one(info, grid, transform, n, bands, categorical)
        take = file_valid & ~valid
        if not take.any():
            continue
        if used:
            np.copyto(data, file_data, casting="unsafe", where=take)
            valid |= take
        else:  # the first file that covers the tile: all of it
            data = file_data.astype(dtype, copy=False)
            if not file_valid.all():
                np.copyto(data, 0, where=~file_valid)  # several times faster than data[:, ~v]
            valid = file_valid
        used.append(info.path)
        if valid.all():
            break
    return data, valid, used


def _warp_one(
    info: SourceInfo,
    grid: Grid,
    transform,
    n: int,
    bands: Sequence[int],
    categorical: bool,
) -> tuple[np.ndarray, np.ndarray]:
    resampling = _resampling_for(info, grid, categorical=categorical)
    try:
        src = _source(info)
        bad = [b for b in bands if not 1 <= b <= src.count]
        if bad:
            raise InputError(
                f"{info.path} has {src.count} band(s) but band {bad[0]} was asked for; "
                "fix the source's bands mapping"
            )
        window = _grid_window(src, grid, transform, n)
        if window is not None:  # already on the grid: a plain windowed read, no warping
            return _read_window(src, window, n, bands)
        opts: dict = {}
        flags = src.mask_flag_enums
        has_alpha = any(MaskFlags.alpha in f for f in flags)
        internal_mask = not has_alpha and any(MaskFlags.per_dataset in f for f in flags)
        if src.nodata is not None:
            opts.update(src_nodata=src.nodata, nodata=src.nodata)
        elif not has_alpha:
            opts["add_alpha"] = True  # otherwise pixels outside the file would read as valid
        with WarpedVRT(
            src,
            crs=grid.rio_crs,
            transform=transform,
            width=n,
            height=n,
            resampling=resampling,
            **opts,
        ) as vrt:
            data = vrt.read(indexes=list(bands))
            if src.nodata is None:
                valid = vrt.dataset_mask() > 0
            else:
                valid = (vrt.read_masks(indexes=list(bands)) > 0).all(axis=0)
        if internal_mask:  # a warped VRT ignores per-dataset masks: warp the mask too
            valid &= _warp_internal_mask(src, grid, transform, n)
    except RasterioIOError as exc:
        reason = str(exc).split("\n")[0]
        raise InputError(
            f"{info.path} cannot be read ({reason}); check or replace the file"
        ) from None
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return data, valid


def _source(info: SourceInfo) -> rasterio.DatasetReader:
    """``info``'s file, opened once per thread and kept open (the last few used) while it is
    unchanged, so that GDAL's block cache serves the next tile's halo."""
    key = info.signature
    sources = _open.__dict__.setdefault("sources", OrderedDict())
    if key in sources:
        sources.move_to_end(key)
        return sources[key]
    src = rasterio.open(info.path)
    sources[key] = src
    while len(sources) > _OPEN_SOURCES:
        sources.popitem(last=False)[1].close()
    return src


def _grid_window(src, grid: Grid, transform, n: int) -> Window | None:
    """The tile's window in ``src`` when ``src`` is pixel-aligned with the grid, else None."""
    t = src.transform
    res = grid.resolution
    if t.b or t.d or not (math.isclose(t.a, res) and math.isclose(t.e, -res)):
        return None
    col, row = (transform.c - t.c) / res, (t.f - transform.f) / res
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6 or src.crs != grid.rio_crs:
        return None
    return Window(round(col), round(row), n, n)


def _read_window(
    src, window: Window, n: int, bands: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` of ``src`` (which may reach outside it) into (bands, n, n) + valid."""
    data = np.zeros((len(bands), n, n), dtype=src.dtypes[0])
    valid = np.zeros((n, n), dtype=bool)
    try:
        inner = window.intersection(Window(0, 0, src.width, src.height))
    except WindowError:
        return data, valid
    rows = slice(inner.row_off - window.row_off, inner.row_off - window.row_off + inner.height)
    cols = slice(inner.col_off - window.col_off, inner.col_off - window.col_off + inner.width)
    data[:, rows, cols] = src.read(indexes=list(bands), window=inner)
    if src.nodata is not None:
        valid[rows, cols] = (src.read_masks(indexes=list(bands), window=inner) > 0).all(axis=0)
    else:
        valid[rows, cols] = src.dataset_mask(window=inner) > 0
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return data, valid


def _warp_internal_mask(src, grid: Grid, transform, n: int) -> np.ndarray:
    """A source's per-dataset mask on the tile window (nearest neighbour), as bool (n, n)."""
    bounds = array_bounds(n, n, transform)
    left, bottom, right, top = transform_bounds(grid.rio_crs, src.crs, *bounds, densify_pts=21)
    full = Window(0, 0, src.width, src.height)
    window = src.window(left, bottom, right, top).round_offsets().round_lengths()
    try:
        window = window.intersection(full)
    except WindowError:
        return np.zeros((n, n), bool)
    out = np.zeros((n, n), np.uint8)
    reproject(
        src.dataset_mask(window=window),
        out,
        src_transform=src.window_transform(window),
        src_crs=src.crs,
        dst_transform=transform,
        dst_crs=grid.rio_crs,
        resampling=Resampling.nearest,
    )
    return out > 0


def write_tile(
    path: str | os.PathLike,
    data: np.ndarray,
    valid: np.ndarray,
    *,
    grid: Grid,
    tile: TileId,
    band_names: Sequence[str],
) -> None:
    """Write a haloed tile as a tiled (``_BLOCK`` px), ZSTD-compressed GeoTIFF with an internal
    mask, atomically. A tile valid everywhere gets no mask (GDAL then reads every pixel as
    valid): writing a mask takes about a third of the time of the write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    predictor = 3 if np.issubdtype(data.dtype, np.floating) else 2
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=grid.rio_crs,
        transform=grid.transform(tile, halo=True),
        tiled=True,
        blockxsize=_BLOCK,
        blockysize=_BLOCK,
        compress="zstd",
        predictor=predictor,
        zstd_level=1,
    )
    fd, tmp = tempfile.mkstemp(suffix=".tif.part", dir=path.parent)
    os.close(fd)
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(data)
                if not valid.all():
                    dst.write_mask(valid.astype(np.uint8) * 255)
                dst.descriptions = tuple(band_names)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def all_valid(src: rasterio.DatasetReader) -> bool:
    """Whether a stored tile has no mask (:func:`write_tile` stores none for a tile valid
    everywhere), so that its mask need not be read."""
    return all(MaskFlags.all_valid in flags for flags in src.mask_flag_enums)


def read_tile(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read a stored tile: ``(data (bands, n, n), valid (n, n) bool, band names)``."""
    with rasterio.open(path) as src:
        data = src.read()
        valid = np.ones(data.shape[1:], bool) if all_valid(src) else src.dataset_mask() > 0
        names = tuple(d or f"b{i + 1}" for i, d in enumerate(src.descriptions))
    return data, valid, names
