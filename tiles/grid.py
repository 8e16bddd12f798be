"""The analysis grid: a projected CRS cut into square tiles anchored at the CRS origin.

Tile ``(row, col)`` covers ``left = col * span``, ``bottom = row * span`` (``span = tile_size *
resolution`` metres), so the same tile id means the same place in every quarter, whatever area a
batch covers. Rows count northward from the CRS's ``y = 0``; columns eastward from ``x = 0``.
Every tile is read with a ``halo`` of extra pixels on each side so that objects crossing a tile
edge are seen whole by the tile that owns them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from errors import ConfigError

__all__ = ["Bounds", "Grid", "TileId"]


class Bounds(NamedTuple):
    """An axis-aligned box in grid CRS units (metres): ``left, bottom, right, top``."""

    left: float
    bottom: float
    right: float
    top: float

    def intersection(self, other: Bounds) -> Bounds | None:
        """The overlap of two boxes, or None when they do not overlap (touching is not overlap)."""
        left, bottom = max(self.left, other.left), max(self.bottom, other.bottom)
        right, top = min(self.right, other.right), min(self.top, other.top)
        if right <= left or top <= bottom:
            return None
        return Bounds(left, bottom, right, top)

    def union(self, other: Bounds) -> Bounds:
        """The smallest box holding both."""
        return Bounds(
            min(self.left, other.left),
            min(self.bottom, other.bottom),
            max(self.right, other.right),
            max(self.top, other.top),
        )

    @property
    def area(self) -> float:
        return (self.right - self.left) * (self.top - self.bottom)


class TileId(NamedTuple):
    """A tile of the grid: ``row`` counts northward, ``col`` eastward, both from the CRS origin."""

    row: int
    col: int

    @property
    def name(self) -> str:
        """A file-name-safe label, e.g. ``r4927_c1016`` (``m`` marks a negative index)."""
        return f"r{_signed(self.row)}_c{_signed(self.col)}"

    @classmethod
    def parse(cls, name: str) -> TileId:
        """Inverse of :attr:`name`."""
        try:
            r, c = name.split("_")
            if r[0] != "r" or c[0] != "c":
                raise ValueError(name)
            return cls(_unsigned(r[1:]), _unsigned(c[1:]))
        except (ValueError, IndexError):
            raise ValueError(f"not a tile name: {name!r} (expected e.g. 'r4927_c1016')") from None


def _signed(i: int) -> str:
    return f"m{-i}" if i < 0 else str(i)


def _unsigned(s: str) -> int:
    return -int(s[1:]) if s.startswith("m") else int(s)


@dataclass(frozen=True)
class Grid:
    """A tiled analysis grid.

    Parameters
    ----------
    crs : str
        A projected CRS in metres, as an EPSG code (``"EPSG:4547"``) or WKT.
    resolution : float
        Pixel size in metres.
    tile_size : int
        Tile width and height in pixels.
    halo : int
        Pixels read around each tile on every side.
    """

    crs: str
    resolution: float
    tile_size: int = 1024
    halo: int = 64

    def __post_init__(self) -> None:
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise ConfigError(f"[grid] resolution = {self.resolution!r} must be a positive number")
        if self.tile_size < 16:
            raise ConfigError(f"[grid] tile_size = {self.tile_size} is too small; use e.g. 1024")
        if not 0 <= self.halo <= self.tile_size // 2:
            raise ConfigError(
                f"[grid] halo = {self.halo} must be between 0 and tile_size/2 ({self.tile_size // 2})"
            )
        crs = self.rio_crs  # validates
        if not crs.is_projected:
            raise ConfigError(
                f"[grid] crs = {self.crs!r} is not a projected CRS; use one in metres, e.g. 'EPSG:4547'"
            )

    @cached_property
    def rio_crs(self) -> CRS:
        """The grid CRS as a :class:`rasterio.crs.CRS`."""
        try:
            return CRS.from_user_input(self.crs)
        except CRSError:
            raise ConfigError(
                f"[grid] crs = {self.crs!r} is not a known CRS; give an EPSG code such as "
                "'EPSG:4547' or a WKT string"
            ) from None

    @property
    def span(self) -> float:
        """Tile width in metres."""
        return self.tile_size * self.resolution

    @property
    def window_size(self) -> int:
        """Width and height in pixels of a haloed tile."""
        return self.tile_size + 2 * self.halo

    def bounds(self, tile: TileId, *, halo: bool = False) -> Bounds:
        """The tile's box in grid CRS metres, with the halo when ``halo`` is true."""
        pad = self.halo * self.resolution if halo else 0.0
        left, bottom = tile.col * self.span, tile.row * self.span
        return Bounds(left - pad, bottom - pad, left + self.span + pad, bottom + self.span + pad)

    def transform(self, tile: TileId, *, halo: bool = True) -> Affine:
        """The north-up Affine of the tile's pixel array (haloed by default)."""
        b = self.bounds(tile, halo=halo)
        return Affine(self.resolution, 0.0, b.left, 0.0, -self.resolution, b.top)

    def core_slices(self) -> tuple[slice, slice]:
        """Row and column slices of the tile proper inside a haloed array."""
        s = slice(self.halo, self.halo + self.tile_size)
        return s, s

    def tile_of(self, x: float, y: float) -> TileId:
        """The tile holding the point ``(x, y)`` (grid CRS metres)."""
        return TileId(self._index(y), self._index(x))

    def _index(self, v: float) -> int:
        i = math.floor(v / self.span)
        # v / span can round onto the next integer (e.g. -5e-324 / 512 == -0.0)
        if i * self.span > v:
            i -= 1
        elif (i + 1) * self.span <= v:
            i += 1
        return i

    def tiles(self, bounds: Bounds) -> Iterator[TileId]:
        """Tiles whose core overlaps ``bounds``, row by row from the north-west."""
        col0 = math.floor(bounds.left / self.span)
        col1 = math.ceil(bounds.right / self.span)
        row0 = math.floor(bounds.bottom / self.span)
        row1 = math.ceil(bounds.top / self.span)
        for row in range(row1 - 1, row0 - 1, -1):
            for col in range(col0, col1):
                if self.bounds(TileId(row, col)).intersection(bounds) is not None:
                    yield TileId(row, col)
