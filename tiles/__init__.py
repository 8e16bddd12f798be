"""The analysis grid (value objects) and raster I/O onto it."""

from .grid import Bounds, Grid, TileId
from .io import SourceInfo, all_valid, describe_source, read_onto_tile, read_tile, write_tile

__all__ = [
    "Bounds",
    "Grid",
    "SourceInfo",
    "TileId",
    "all_valid",
    "describe_source",
    "read_onto_tile",
    "read_tile",
    "write_tile",
]
