"""Image chips: each task's place before and after, as small JPEGs with its outline drawn.

A chip is a square around the task: its larger side plus ``margin`` of it on every side, at
least ``min_extent_m`` wide, snapped to the grid's pixels. It is read from the epochs' tile
stores (``<work>/epochs/<epoch>/<kind>/<tile>.tif``), core by core from every tile it touches,
so a task on a tile edge gets one seamless chip. Drone imagery is used where it covers at least
``drone_cover`` of the chip, satellite red/green/blue otherwise. Each chip is stretched to 8 bit
between the 2nd and 98th percentiles of its valid pixels (all three bands together, so colours
keep their balance), scaled to ``size`` pixels, and the task's outline is drawn on it. Pixels
without data are light grey.

Chips are written to ``<out_dir>/<office_code>/chips/<task_id>_{before,after}.jpg``; with an
executor, batches of neighbouring tasks are cut in parallel (every chip is the same whatever the
executor). JPEG (quality 90) rather than PNG: a chip of aerial imagery is about 15 KB instead of
100 KB, so an office's workbook of a few hundred tasks stays small enough to mail, and it is
encoded some twenty times faster. ``ChipOptions(format="png")`` keeps chips lossless.
"""

from __future__ import annotations

import math
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from PIL import Image, ImageDraw
from rasterio.windows import Window

from tiles import Bounds, Grid, TileId, all_valid

from .atomic import atomic_path
from .executors import Executor
from .ingest import EpochIndex, load_index

__all__ = ["Chip", "ChipOptions", "write_chips"]

_RGB = ("red", "green", "blue")
_NO_DATA = 230
_OUTLINE = (255, 32, 32)
_HALO = (255, 255, 255)  # under the outline, so that it shows on red roofs too
#: Batches per worker (neighbouring tasks share tiles, so a batch keeps them open), and the
#: most tasks in one batch (so the tiles a batch holds open do not grow with the quarter).
_BATCHES_PER_WORKER = 4
_BATCH_MAX = 64


@dataclass(frozen=True)
class ChipOptions:
    """How chips are cut and drawn.

    Attributes
    ----------
    size : int
        Width and height of a chip in pixels.
    margin : float
        Share of the task's larger side added around it on every side.
    min_extent_m : float
        Smallest chip width in metres (small tasks are shown with their surroundings).
    drone_cover : float
        Share (0-1] of a chip that drone imagery must cover to be used instead of satellite.
    format : {"jpeg", "png"}
        Image format of the chip files (``.jpg`` or ``.png``).
    quality : int
        JPEG quality (1-95).
    """

    size: int = 240
    margin: float = 0.5
    min_extent_m: float = 30.0
    drone_cover: float = 0.95
    format: Literal["jpeg", "png"] = "jpeg"
    quality: int = 90

    @property
    def suffix(self) -> str:
        return ".jpg" if self.format == "jpeg" else ".png"


@dataclass(frozen=True)
class Chip:
    """A task's chips: image paths and the kind of imagery each shows (``drone``, ``satellite``),
    None where an epoch has no imagery of the place."""

    before: Path | None
    after: Path | None
    before_kind: str | None
    after_kind: str | None


def write_chips(
    tasks: gpd.GeoDataFrame,
    *,
    grid: Grid,
    work: str | os.PathLike,
    before: str,
    after: str,
    out_dir: str | os.PathLike,
    options: ChipOptions = ChipOptions(),
    executor: Executor | None = None,
) -> dict[str, Chip]:
    """Write before and after chips of every task.

    Parameters
    ----------
    tasks : geopandas.GeoDataFrame
        ``task_id``, ``office_code`` and polygons (any CRS; chips are cut in the grid's).
    grid : tiles.Grid
        The analysis grid of the tile stores.
    work : str or os.PathLike
        ``[paths].work``, holding ``epochs/<epoch>/``.
    before, after : str
        The epochs shown.
    out_dir : str or os.PathLike
        The quarter's ``worklists/`` folder.
    options : ChipOptions
        Size, margin and imagery choice.
    executor : Executor, optional
        Where batches of chips are cut; serially in this process without one.

    Returns
    -------
    dict
        ``task_id`` -> :class:`Chip`.

    Chips that an earlier run left in ``out_dir``'s office folders and this one did not write
    (tasks no longer issued, chips of another format) are removed, so that a folder shows the
    quarter's tasks only.
    """
    out_dir = Path(out_dir)
    geoms = tasks.to_crs(grid.rio_crs).geometry.to_numpy()
    boxes = _chip_boxes(geoms, grid=grid, options=options)
    folders = [out_dir / code / "chips" for code in tasks["office_code"]]
    items = list(zip(tasks["task_id"], boxes, geoms, folders, strict=True))
    # neighbours together: by tile row (north first), then west to east
    items.sort(key=lambda item: (-math.floor(item[1].top / grid.span), item[1].left))
    indexes = load_index(Path(work), before), load_index(Path(work), after)
    jobs = [
        _ChipJob(Path(work), grid, *indexes, batch, options)
        for batch in _batches(items, 1 if executor is None else executor.n_workers)
    ]
    if executor is None:
        results = [_write_batch(job) for job in jobs]
    else:
        results = [
            chips for _, chips in executor.map(_write_batch, jobs, desc="chips", unit="batch")
        ]
    written = {task_id: chip for chips in results for task_id, chip in chips}
    _prune(out_dir, {path for chip in written.values() for path in (chip.before, chip.after)})
    return written


def _prune(out_dir: Path, keep: set[Path | None]) -> None:
    """Remove the chips of an earlier run of the quarter that this run did not write again: of
    tasks no longer issued, or of another format. Other files in the folders are left alone."""
    for path in out_dir.glob("*/chips/*"):
        if (
            path.suffix in (".jpg", ".png")
            and path.stem.endswith(("_before", "_after"))
            and path not in keep
        ):
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _ChipJob:
    work: Path
    grid: Grid
    before: EpochIndex
    after: EpochIndex
    items: list  # (task_id, box, geometry, folder)
    options: ChipOptions


def _batches(items: list, workers: int) -> list[list]:
    """``items`` cut into runs: ``_BATCHES_PER_WORKER`` per worker (one on a single worker),
    more if that would put over ``_BATCH_MAX`` tasks in one."""
    count = 1 if workers == 1 else _BATCHES_PER_WORKER * workers
    count = min(len(items), max(count, math.ceil(len(items) / _BATCH_MAX)))
    size = math.ceil(len(items) / max(count, 1))
    return [items[i : i + size] for i in range(0, len(items), size)] if items else []


def _write_batch(job: _ChipJob) -> list[tuple[str, Chip]]:
    """Worker: the before and after chips of a batch of tasks."""
    shown: dict[str, list] = {}
    with ExitStack() as stack:
        for label, index in (("before", job.before), ("after", job.after)):
            reader = _Reader(job.work, index, job.grid, stack)
            shown[label] = [
                _write_chip(
                    reader,
                    box,
                    geom,
                    folder / f"{task_id}_{label}{job.options.suffix}",
                    options=job.options,
                )
                for task_id, box, geom, folder in job.items
            ]
    return [
        (item[0], Chip(b[0], a[0], b[1], a[1]))
        for item, b, a in zip(job.items, shown["before"], shown["after"], strict=True)
    ]


def _chip_boxes(geoms: np.ndarray, *, grid: Grid, options: ChipOptions) -> list[Bounds]:
    """Square chip bounds around each geometry, snapped outwards to grid pixels."""
    res = grid.resolution
    x0, y0, x1, y1 = shapely.bounds(geoms).T
    side = np.maximum(np.maximum(x1 - x0, y1 - y0) * (1 + 2 * options.margin), options.min_extent_m)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    n = np.ceil(side / res)
    left = np.floor((cx - n * res / 2) / res) * res
    bottom = np.floor((cy - n * res / 2) / res) * res
    return [
        Bounds(float(lft), float(btm), float(lft + k * res), float(btm + k * res))
        for lft, btm, k in zip(left, bottom, n, strict=True)
    ]


class _Reader:
    """Reads red/green/blue of a box from one epoch's tile store, keeping tiles open."""

    def __init__(self, work: Path, index: EpochIndex, grid: Grid, stack: ExitStack):
        self.store = work / "epochs" / index.epoch
        self.index = index
        self.grid = grid
        self.stack = stack
        self.open: dict[Path, rasterio.DatasetReader] = {}

    def read(self, box: Bounds, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb (3, n, n), valid (n, n) bool)`` of ``box`` from ``kind`` tiles."""
        res = self.grid.resolution
        n = round((box.right - box.left) / res)
        rgb = np.zeros((3, n, n), dtype=np.float32)
        valid = np.zeros((n, n), dtype=bool)
        for tile in self.grid.tiles(box):
            record = self.index.tiles.get(tile.name, {}).get(kind)
            part = self.grid.bounds(tile).intersection(box)
            if record is None or part is None:
                continue
            src = self._dataset(self.store / record["file"])
            bands = [list(record["bands"]).index(name) + 1 for name in _RGB]
            window = self._window(tile, part)
            rows = slice(round((box.top - part.top) / res), round((box.top - part.bottom) / res))
            cols = slice(round((part.left - box.left) / res), round((part.right - box.left) / res))
            rgb[:, rows, cols] = src.read(bands, window=window)
            if all_valid(src):
                valid[rows, cols] = True
            else:
                valid[rows, cols] = src.read_masks(1, window=window) > 0
        return rgb, valid

    def _window(self, tile: TileId, part: Bounds) -> Window:
        outer = self.grid.bounds(tile, halo=True)
        res = self.grid.resolution
        return Window(
            col_off=round((part.left - outer.left) / res),
            row_off=round((outer.top - part.top) / res),
            width=round((part.right - part.left) / res),
            height=round((part.top - part.bottom) / res),
        )

    def _dataset(self, path: Path) -> rasterio.DatasetReader:
        if path not in self.open:
            self.open[path] = self.stack.enter_context(rasterio.open(path))
        return self.open[path]


def _write_chip(
    reader: _Reader, box: Bounds, geom: shapely.Geometry, path: Path, *, options: ChipOptions
) -> tuple[Path | None, str | None]:
    """Write one chip (drone if it covers the box, else satellite); ``(path, kind)`` or Nones."""
    for kind, enough in (("drone", options.drone_cover), ("satellite", 0.0)):
        rgb, valid = reader.read(box, kind)
        if valid.any() and valid.mean() >= enough:
            break
    else:
        return None, None
    image = Image.fromarray(_stretched(rgb, valid)).resize(
        (options.size, options.size), Image.Resampling.BILINEAR
    )
    _draw_outline(image, geom, box)
    with atomic_path(path, sync=False) as tmp:  # a chip is cut again from the tiles at will
        if options.format == "jpeg":
            image.save(tmp, format="JPEG", quality=options.quality)
        else:
            image.save(tmp, format="PNG", compress_level=1)
    return path, kind


def _stretched(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``rgb (3, n, n)`` as ``(n, n, 3)`` uint8, 2-98 % of the valid pixels stretched to 0-255."""
    lo, hi = np.percentile(rgb[:, valid], [2, 98])
    scaled = np.clip((rgb - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    np.copyto(scaled, np.uint8(_NO_DATA), where=~valid)
    return np.ascontiguousarray(np.moveaxis(scaled, 0, -1))


def _draw_outline(image: Image.Image, geom: shapely.Geometry, box: Bounds) -> None:
    """Draw the rings of ``geom`` (grid CRS) on ``image`` covering ``box``, red on white."""
    scale = image.width / (box.right - box.left)
    width = max(2, math.ceil(image.width / 160))
    draw = ImageDraw.Draw(image)
    rings = shapely.get_rings(shapely.get_parts(geom))
    pixels = [
        (shapely.get_coordinates(ring) - (box.left, box.top)) * (scale, -scale) for ring in rings
    ]
    lines = [list(map(tuple, xy.tolist())) for xy in pixels]
    for colour, extra in ((_HALO, 2), (_OUTLINE, 0)):
        for line in lines:
            draw.line(line, fill=colour, width=width + extra, joint="curve")
