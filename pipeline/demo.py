"""Synthetic demo quarters: imagery, vectors, truth and configuration for ``tuban demo``.

:func:`make_demo` draws a district once as vector objects: a slightly rotated street grid,
blocks of village houses, flats, sheds, parks, fields and ponds, a river and trees. Between two
quarters it plants the changes the pipeline must find (new buildings, extensions, demolitions,
land clearing) and nuisances it must not report (a radiometric shift, seasonal vegetation, a
misregistered scene, a cloud with its shadow, cars, noise, nodata edges). Every product is
rasterised from the same vectors in its own CRS and resolution, so the products agree the way
real ones do:

=========  =============================  ==========  =====  ===============================
product    bands, dtype                   CRS         pixel  coverage
=========  =============================  ==========  =====  ===============================
satellite  blue, green, red, nir; uint16  EPSG:4547   0.5 m  the area, in two overlapping files
drone      red, green, blue, alpha; uint8 EPSG:32650  0.1 m  a rotated block, alpha 0 outside
dsm        height (m); float32            EPSG:32650  0.2 m  the same block, -9999 outside
=========  =============================  ==========  =====  ===============================

With ``quarters=2`` a third epoch follows, so that a second batch can meet the first one's
tasks again: some of the first quarter's illegal buildings grow by a storey or two (the case
persists), some are torn down (demolition observed), and new changes of every kind appear,
about half as many as in the first quarter. Its scene has its own radiometry, misregistration,
cars and noise, and no cloud.

What :func:`make_demo` writes into its folder::

    quarter.toml                   the first quarter's batch configuration (paths relative to it)
    quarter_2024Q3.toml            with quarters=2: the second quarter's, 2024Q2 -> 2024Q3
    imagery/sat_<epoch>_{w,e}.tif  satellite scene, west and east files overlapping by 100 px
    imagery/drone_<epoch>.tif      drone orthomosaic
    imagery/dsm_<epoch>.tif        drone surface model
    offices.gpkg                   three street offices, EPSG:4490
    permits.gpkg                   building permits, EPSG:4547
    truth.gpkg                     layers ``truth`` (the planted changes), ``nuisance`` and,
                                   with quarters=2, ``truth_2024Q3``

Both configurations list every epoch and share the work folder, the outputs folder and the
register, so the second batch reuses the first one's tile stores and finds its tasks.

The district is laid out in a local frame ``(p, q)`` in metres: p along the streets, q across,
the origin on a corner of the 512 m analysis tiles, so that one planted building straddles four
tiles. Rectangles (buildings, extensions, cars) are table rows ``p, q`` (centre), ``w`` (size
along the rectangle's axis), ``d`` (size across), ``a`` (axis angle, radians), ``h`` (height, m)
and their reflectance ``blue, green, red, nir`` (x 10000).
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio import features, warp
from rasterio.enums import ColorInterp, Resampling
from scipy import ndimage
from tqdm import tqdm

from errors import InputError

from .scoring import ObjectScore, drone_footprint, score_by_cover, score_tasks

__all__ = [
    "Demo",
    "QuarterScore",
    "make_demo",
    "score_quarter",
    "CASES",
    "EPOCHS",
    "KINDS",
    "OFFICES",
]

# (id, date) of the epochs: quarter k (from 1) compares epochs k - 1 and k.
EPOCHS = (("2024Q1", "2024-03-20"), ("2024Q2", "2024-06-20"), ("2024Q3", "2024-09-20"))
KINDS = ("new_building", "extension", "demolition", "land_clearing")  # planted change kinds
CASES = ("continued", "demolished", "new")  # how a second quarter's change relates to the first
OFFICES = (("XQ", "西区街道"), ("AT", "澳头街道"), ("XY", "霞涌街道"))  # (code, name), west to east

_GRID_CRS = "EPSG:4547"  # CGCS2000 / 3-degree Gauss-Kruger CM 114E
_DRONE_CRS = "EPSG:32650"  # WGS 84 / UTM 50N
_OFFICE_CRS = "EPSG:4490"  # CGCS2000 geographic
_ORIGIN = (520_130.0, 2_522_270.0)  # upper-left corner of the area, EPSG:4547 metres
_RES, _DRONE_RES, _DSM_RES = 0.5, 0.1, 0.2  # m per pixel
_TILE = 1024  # px of the analysis grid written to quarter.toml
_TILE_M = _TILE * _RES
_MIN_SIZE = 1024  # px; smaller areas leave no room for every kind of change
_QUARTERS = (1, 2)  # quarters make_demo can write
_OVERLAP = 100  # px shared by the west and east satellite files
_EDGE_MARGIN = 30.0  # m kept between a planted change and the area's edge
_DSM_NODATA = -9999.0
# Planted changes per km2: about 24, 8, 6 and 6 in the default 4 km2.
_RATES = {"new_building": 5.7, "extension": 1.9, "demolition": 1.43, "land_clearing": 1.43}
# The sun stands in the south-east about 45 degrees high: shadows fall to the north-west and
# are as long as the object is high. World (east, north) metres per metre of height.
_SHADOW = np.array([-0.766, 0.643])
_CLOUD_SHIFT = 2.2  # a cloud's shadow lies this many cloud radii from it, the same way
# Each later satellite scene's radiometry against the first's, (gain, offset, gamma) per epoch
# from the second: DN' = gain * 10000 * (DN / 10000) ** gamma + offset.
_RADIOMETRY = tuple(
    (
        np.array(gain, np.float32)[:, None, None],
        np.array(offset, np.float32)[:, None, None],
        gamma,
    )
    for gain, offset, gamma in (
        ((1.10, 1.12, 1.13, 1.09), (150.0, 150.0, 140.0, 160.0), 0.94),
        ((0.95, 0.97, 0.98, 1.06), (90.0, 100.0, 110.0, 70.0), 1.03),
    )
)
# Each drone flight's white balance (red, green, blue) and height datum (m), per epoch.
_BALANCE = ((1.0, 1.0, 1.0), (1.03, 1.0, 0.96), (0.98, 1.0, 1.04))
_DATUM = (0.0, 0.25, -0.2)

_BANDS = ("blue", "green", "red", "nir")
# Surface classes: reflectance (x 10000) per band, texture amplitudes, and which classes cast
# shadows fall on (ground level) and which green up in summer.
GROUND, SOIL, GRASS, CROP, WATER, ROAD, TREE, ROOF, RUBBLE, DUST, CAR = range(11)
_REFLECTANCE = np.array(
    [
        [1000, 1080, 1200, 1650],  # GROUND: yards, compacted earth, concrete
        [850, 1150, 1600, 2250],  # SOIL
        [420, 720, 560, 3000],  # GRASS
        [450, 860, 640, 3500],  # CROP
        [450, 600, 450, 150],  # WATER
        [780, 820, 860, 1050],  # ROAD
        [260, 560, 330, 2900],  # TREE
        [1200, 1250, 1300, 1550],  # ROOF (each roof has its own colour)
        [1100, 1250, 1500, 2000],  # RUBBLE: broken brick and soil
        [1650, 1700, 1750, 1950],  # DUST: crushed concrete
        [1500, 1550, 1600, 1750],  # CAR (each car has its own colour)
    ],
    np.float32,
)
_LOW_AMP = np.array([0.10, 0.12, 0.15, 0.10, 0.05, 0.05, 0.10, 0.02, 0.10, 0.10, 0.0], np.float32)
_FINE_SAT = np.array([0.04, 0.05, 0.07, 0.05, 0.02, 0.03, 0.10, 0.02, 0.15, 0.12, 0.01], np.float32)
_FINE_DRONE = np.array(
    [0.10, 0.14, 0.24, 0.18, 0.04, 0.07, 0.22, 0.04, 0.35, 0.30, 0.03], np.float32
)
_AT_GROUND = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1], bool)
_GREEN = np.array([0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0], bool)
_SHADE = np.array([0.45, 0.38, 0.34, 0.30], np.float32)  # shadow / sunlit, per band
_ROOFS = np.array(
    [
        [650, 800, 1450, 2000],  # red clay tiles
        [1250, 1300, 1350, 1600],  # grey concrete
        [600, 650, 700, 900],  # dark grey
        [2300, 2400, 2500, 2700],  # white coating
        [1750, 1250, 750, 1000],  # blue steel sheet
        [850, 950, 1150, 1500],  # brown
    ],
    np.float32,
)
_ROOF_ODDS = {
    "village": (0.30, 0.30, 0.10, 0.12, 0.03, 0.15),
    "flats": (0.25, 0.40, 0.05, 0.25, 0.0, 0.05),
    "sheds": (0.0, 0.20, 0.0, 0.35, 0.45, 0.0),
}
_CARS = np.array(
    [
        [2600, 2650, 2700, 2800],
        [350, 350, 380, 450],
        [1500, 1550, 1600, 1750],
        [500, 450, 1800, 2200],
        [1300, 700, 400, 700],
    ],
    np.float32,
)  # white, black, silver, red, blue
_CAR_ODDS = (0.4, 0.2, 0.2, 0.1, 0.1)
_BLOCK_KINDS = ("village", "flats", "sheds", "park", "farm", "pond")
_BLOCK_ODDS = (0.42, 0.12, 0.08, 0.16, 0.14, 0.08)
_RECT_COLUMNS = ["p", "q", "w", "d", "a", "h", *_BANDS]
_TREE_COLUMNS = ["p", "q", "radius", "h", "tone", "season"]
_PATCH_COLUMNS = ["geometry", "cls", "tone", "season", "layer"]


@dataclass(frozen=True)
class Demo:
    """What :func:`make_demo` wrote.

    Attributes
    ----------
    root : Path
        The folder holding everything below.
    configs : tuple of Path
        The batch configuration of each quarter, in order: ``quarter.toml`` (2024Q1 -> 2024Q2)
        and, with two quarters, ``quarter_2024Q3.toml`` (2024Q2 -> 2024Q3).
    truth : Path
        ``truth.gpkg``, EPSG:4547. Layer ``truth``: one polygon per change planted in the
        first quarter with ``kind`` (one of :data:`KINDS`), ``permitted`` (bool), ``in_drone``
        (bool, inside the drone block) and ``height_m`` (height of the building built or
        removed, 0 for land clearing). Layer ``truth_2024Q3`` (two quarters): the same fields
        for the second quarter, where ``height_m`` of a continued case is the height it gained,
        plus ``case`` (one of :data:`CASES`) and ``prior``, the row (from 0) in layer ``truth``
        of the change a continued or demolished case follows up (null for new ones). Layer
        ``nuisance``: ``kind`` cloud | cloud_shadow | drone_footprint and ``epoch`` (the epoch
        id; null for the footprint, which all epochs share).
    truth_layers : tuple of str
        The layer of ``truth.gpkg`` each quarter is scored against, in the order of `configs`.
    offices, permits : Path
        The street offices (EPSG:4490) and building permits (EPSG:4547).
    bounds : tuple of float
        ``(left, bottom, right, top)`` of the area, EPSG:4547 metres.
    shifts_px : tuple of tuple of float
        Per epoch after the first: ``(col, row)`` displacement of its satellite scene's content
        from the true place, in 0.5 m pixels (east and south positive).
    """

    root: Path
    configs: tuple[Path, ...]
    truth: Path
    truth_layers: tuple[str, ...]
    offices: Path
    permits: Path
    bounds: tuple[float, float, float, float]
    shifts_px: tuple[tuple[float, float], ...]

    @property
    def config(self) -> Path:
        """The first quarter's configuration, ``quarter.toml``."""
        return self.configs[0]

    @property
    def shift_px(self) -> tuple[float, float]:
        """The 2024Q2 satellite scene's displacement, ``(col, row)`` px."""
        return self.shifts_px[0]


def make_demo(
    out: str | os.PathLike, *, size: int = 4096, seed: int = 0, quarters: int = 1
) -> Demo:
    """Write a synthetic but realistic quarter (two epochs), or two quarters (three epochs),
    into the folder `out`.

    Parameters
    ----------
    out : str or PathLike
        Folder to write into, created if missing; the demo's files there are replaced.
    size : int, optional
        Width and height of the area in 0.5 m pixels (4096: 2048 m x 2048 m); at least 1024.
    seed : int, optional
        Seed, >= 0. The same `size` and `seed` give the same rasters, value for value.
    quarters : {1, 2}, optional
        How many quarters. The first quarter's epochs and truth are the same either way.

    Returns
    -------
    Demo
        Where the configurations, truth and vectors are, and the area's bounds.

    Raises
    ------
    InputError
        If `size`, `seed` or `quarters` cannot be used or `out` is a file.
    """
    _check(out, size, seed, quarters)
    root = Path(out)
    (root / "imagery").mkdir(parents=True, exist_ok=True)
    epochs = EPOCHS[: quarters + 1]
    with tqdm(total=2 + 3 * len(epochs), desc="demo", unit="step", disable=None) as bar:
        town = _town(size, np.random.default_rng([seed, 0]))
        plans = [_plant(town, np.random.default_rng([seed, 1]))]
        if quarters == 2:
            plans.append(_plant_again(town, plans[0], np.random.default_rng([seed, 11])))
        states = [plans[0].before, *(plan.after for plan in plans)]
        scenes = [
            _scene(town, state, summer=e > 0, rng=np.random.default_rng([seed, 2, e]))
            for e, state in enumerate(states)
        ]
        world = _world(town, np.random.default_rng([seed, 3]))
        shifts = [
            _misregistration(np.random.default_rng([seed, stream])) for stream in (4, 12)[:quarters]
        ]
        bar.update()
        clouds = _write_satellite(root / "imagery", town, scenes, world, shifts, seed, bar)
        _write_drone(root / "imagery", town, scenes, world, seed, bar)
        _write_vectors(root, town, plans, clouds, np.random.default_rng([seed, 10]))
        configs = [root / _config_name(q) for q in range(quarters)]
        for q, path in enumerate(configs):
            _write_text(path, _toml(_config(epochs, quarter=q)))
        bar.update()
    left, top = _ORIGIN
    extent = size * _RES
    return Demo(
        root=root,
        configs=tuple(configs),
        truth=root / "truth.gpkg",
        truth_layers=tuple(_truth_layer(q) for q in range(quarters)),
        offices=root / "offices.gpkg",
        permits=root / "permits.gpkg",
        bounds=(left, top - extent, left + extent, top),
        shifts_px=tuple((float(x), float(y)) for x, y in shifts),
    )


def _config_name(quarter: int) -> str:
    """The configuration file of quarter `quarter` (from 0)."""
    return "quarter.toml" if quarter == 0 else f"quarter_{EPOCHS[quarter + 1][0]}.toml"


def _truth_layer(quarter: int) -> str:
    """The layer of truth.gpkg holding the changes of quarter `quarter` (from 0)."""
    return "truth" if quarter == 0 else f"truth_{EPOCHS[quarter + 1][0]}"


def _check(out, size, seed, quarters) -> None:
    def whole(value) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if not whole(size) or size < _MIN_SIZE:
        raise InputError(
            f"demo size {size!r} is too small or not a whole number of pixels; "
            f"give --size {_MIN_SIZE} or more"
        )
    if not whole(seed) or seed < 0:
        raise InputError(f"demo seed {seed!r} is not a whole number >= 0; give e.g. --seed 0")
    if not whole(quarters) or quarters not in _QUARTERS:
        raise InputError(f"demo quarters {quarters!r} is not 1 or 2; give --quarters 1 or 2")
    if Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"demo output {os.fspath(out)!r} is a file; give a folder with --out")


@dataclass(frozen=True)
class QuarterScore:
    """A demo quarter's outputs against the changes planted in it.

    Attributes
    ----------
    objects : pipeline.scoring.ObjectScore
        The quarter's tasks against the changes it should issue: all of the first quarter's,
        the ``new`` ones of a later quarter (whose earlier tasks are still open).
    followed : int
        Continued and demolished cases planted (0 in the first quarter).
    linked : int
        How many of those lie, for at least half their area, under suspects linked to an
        earlier task (suppressed, or issued with a ``prior_task_id``).
    reissued : int
        How many of those lie, for at least half their area, under tasks linked to no earlier
        task: issued twice.
    covers : dict of str to pipeline.scoring.ObjectScore
        ``objects`` in the drone block (a DSM in both epochs) and outside it (satellite only),
        keyed by :data:`pipeline.scoring.COVERS` (see :func:`pipeline.scoring.score_by_cover`).
    """

    objects: ObjectScore
    followed: int
    linked: int
    reissued: int
    covers: dict[str, ObjectScore]


def score_quarter(demo: Demo, quarter: int, out_dir: str | os.PathLike) -> QuarterScore:
    """Score the batch outputs of quarter `quarter` (from 0) of `demo` against its truth.

    Parameters
    ----------
    demo : Demo
        The demo, as :func:`make_demo` returned it.
    quarter : int
        Index of the quarter in ``demo.configs``.
    out_dir : str or PathLike
        The quarter's outputs, ``<out>/<quarter id>/``, holding ``<quarter id>.gpkg``.

    Returns
    -------
    QuarterScore
    """
    gpkg = Path(out_dir) / f"{Path(out_dir).name}.gpkg"
    tasks = gpd.read_file(gpkg, layer="tasks")
    truth = gpd.read_file(demo.truth, layer=demo.truth_layers[quarter]).to_crs(tasks.crs)
    footprint = drone_footprint(demo.truth, tasks.crs)
    if "case" not in truth:
        return QuarterScore(
            score_tasks(tasks, truth),
            followed=0,
            linked=0,
            reissued=0,
            covers=score_by_cover(tasks, truth, footprint),
        )
    new = (truth["case"] == "new").to_numpy()
    followed = truth.geometry.to_numpy()[~new]
    linked = np.concatenate(
        [
            frame.geometry[frame["prior_task_id"].notna()].to_numpy()
            for frame in (tasks, gpd.read_file(gpkg, layer="suppressed"))
        ]
    )
    again = tasks.geometry[tasks["prior_task_id"].isna()].to_numpy()
    return QuarterScore(
        score_tasks(tasks, truth[new]),
        followed=len(followed),
        linked=int((_covered(followed, linked) >= 0.5).sum()),
        reissued=int((_covered(followed, again) >= 0.5).sum()),
        covers=score_by_cover(tasks, truth[new], footprint),
    )


def _covered(geoms: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Share of each of `geoms` that `cover` covers, float (n,)."""
    return shapely.area(shapely.intersection(geoms, shapely.union_all(cover))) / shapely.area(geoms)


# --------------------------------------------------------------------------------------------
# The district, which both epochs share (local frame)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """The local frame: origin at EPSG:4547 ``(x, y)``, p axis `theta` radians from east."""

    x: float
    y: float
    theta: float

    def _rotation(self) -> np.ndarray:
        c, s = math.cos(self.theta), math.sin(self.theta)
        return np.array([[c, -s], [s, c]])

    def to_world(self, geoms):
        """Local geometries in EPSG:4547."""
        rotation, origin = self._rotation(), np.array([self.x, self.y])
        return shapely.transform(geoms, lambda pq: pq @ rotation.T + origin)

    def to_local(self, geoms):
        """EPSG:4547 geometries in the local frame."""
        rotation, origin = self._rotation(), np.array([self.x, self.y])
        return shapely.transform(geoms, lambda xy: (xy - origin) @ rotation)

    def shadow(self) -> np.ndarray:
        """Shadow displacement per metre of height, local (p, q), shape (2,)."""
        return _SHADOW @ self._rotation()

    def cloud_shift(self, radius: float) -> np.ndarray:
        """Offset (p, q) of a cloud's shadow from the cloud, m, shape (2,)."""
        return self.shadow() / np.hypot(*_SHADOW) * _CLOUD_SHIFT * radius


@dataclass(frozen=True)
class _Town:
    """The district as both epochs share it, in local frame coordinates (m)."""

    size: int  # px of the area
    frame: _Frame
    area: shapely.Polygon
    interior: shapely.Polygon  # the area less _EDGE_MARGIN
    footprint: shapely.Polygon  # the drone block
    cloud: tuple[float, float, float]  # centre p, q and radius
    seam: pd.DataFrame  # the new building planted across a tile corner, _RECT_COLUMNS
    roads: pd.DataFrame  # geometry, p0, q0, p1, q1 (centre line), width, tone, main
    blocks: pd.DataFrame  # geometry, kind
    patches: pd.DataFrame  # _PATCH_COLUMNS
    buildings: pd.DataFrame  # _RECT_COLUMNS
    trees: pd.DataFrame  # _TREE_COLUMNS

    @property
    def cloud_zone(self) -> shapely.Geometry:
        """Where the cloud and its shadow fall, with a margin."""
        p, q, radius = self.cloud
        dp, dq = self.frame.cloud_shift(radius)
        return shapely.union(
            shapely.Point(p, q).buffer(1.6 * radius),
            shapely.Point(p + dp, q + dq).buffer(1.6 * radius),
        )


def _town(size: int, rng: np.random.Generator) -> _Town:
    extent = size * _RES
    left, top = _ORIGIN
    frame = _Frame(*_tile_corner(left, top, extent, rng), theta=rng.uniform(-0.25, 0.25))
    area = frame.to_local(shapely.box(left, top - extent, left + extent, top))
    p_lo, q_lo, p_hi, q_hi = area.bounds
    streets = _street_lines(p_lo, p_hi, rng), _street_lines(q_lo, q_hi, rng)
    roads = _roads(streets, area, rng)
    side = float(np.clip(0.3 * extent, 150.0, 420.0))
    crossing = _drone_crossing(streets, area, side, rng)
    footprint = _drone_block(streets[0][0][crossing[0]], streets[1][0][crossing[1]], side, rng)
    seam = _seam_building(rng)
    reserved = shapely.buffer(shapely.union_all(_with_shadows(seam, frame)), 6.0)
    blocks = _blocks(streets, area, crossing, reserved, rng)
    patches, buildings, trees = _fill(blocks, rng)
    river, bank = _river(area, [reserved.centroid, footprint.centroid], rng)
    patches = _concat(
        patches, _patches([bank], GRASS, [1.0]), _patches([river], WATER, [1.0], layer=1)
    )
    clash = shapely.intersects(_rects(buildings), shapely.union(bank, reserved))
    buildings = buildings[~clash].reset_index(drop=True)
    trees = _concat(trees, _street_trees(roads, rng))
    crowns = _crowns(trees)
    clash = shapely.intersects(crowns, shapely.union_all([river, reserved, *roads.geometry]))
    trees = trees[~clash & ~_hits(crowns, _rects(buildings))].reset_index(drop=True)
    return _Town(
        size=size,
        frame=frame,
        area=area,
        interior=shapely.buffer(area, -_EDGE_MARGIN, join_style="mitre"),
        footprint=footprint,
        cloud=_cloud_site(area, footprint, reserved, frame, rng),
        seam=seam,
        roads=roads,
        blocks=blocks,
        patches=patches,
        buildings=buildings,
        trees=trees,
    )


def _tile_corner(left: float, top: float, extent: float, rng) -> tuple[float, float]:
    """A corner of the analysis tiles inside the area, at least 50 m from its edges."""
    xs = np.arange(math.ceil((left + 50) / _TILE_M), math.floor((left + extent - 50) / _TILE_M) + 1)
    ys = np.arange(math.ceil((top - extent + 50) / _TILE_M), math.floor((top - 50) / _TILE_M) + 1)
    return float(rng.choice(xs) * _TILE_M), float(rng.choice(ys) * _TILE_M)


def _street_lines(lo: float, hi: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Street centre lines across [lo, hi] (``lo < 0 < hi``), 0 in the middle of a block.

    Returns the sorted positions and widths (m); every third street is a main road.
    """
    n = int(max(hi, -lo) / 110.0) + 3
    first = rng.uniform(110.0, 160.0) / 2
    up = first + np.cumsum(np.concatenate([[0.0], rng.uniform(110.0, 160.0, n)]))
    down = -first - np.cumsum(np.concatenate([[0.0], rng.uniform(110.0, 160.0, n)]))
    lines = np.sort(np.concatenate([down, up]))
    lines = lines[(lines > lo - 160.0) & (lines < hi + 160.0)]
    main = (np.arange(len(lines)) + rng.integers(3)) % 3 == 0
    widths = np.where(main, rng.uniform(18.0, 24.0, len(lines)), rng.uniform(7.0, 10.0, len(lines)))
    return lines, widths


def _roads(streets, area, rng) -> pd.DataFrame:
    (p_lines, p_widths), (q_lines, q_widths) = streets
    p_lo, q_lo, p_hi, q_hi = np.array(area.bounds) + [-60, -60, 60, 60]
    n_p, n_q = len(p_lines), len(q_lines)
    ends = np.array(
        [
            np.concatenate([p_lines, np.full(n_q, p_lo)]),
            np.concatenate([np.full(n_p, q_lo), q_lines]),
            np.concatenate([p_lines, np.full(n_q, p_hi)]),
            np.concatenate([np.full(n_p, q_hi), q_lines]),
        ]
    )
    widths = np.concatenate([p_widths, q_widths])
    lines = shapely.linestrings(ends.T.reshape(-1, 2, 2))
    roads = pd.DataFrame(ends.T, columns=["p0", "q0", "p1", "q1"])
    roads.insert(0, "geometry", shapely.buffer(lines, widths / 2, cap_style="flat"))
    roads["width"] = widths
    roads["tone"] = rng.uniform(0.85, 1.2, len(widths))
    roads["main"] = widths > 15.0
    return roads


def _drone_crossing(streets, area, side: float, rng) -> tuple[int, int]:
    """The street crossing (indices of the p and q lines) the drone block is centred on."""
    (p_lines, _), (q_lines, _) = streets
    pp, qq = np.meshgrid(p_lines, q_lines, indexing="ij")
    inner = shapely.buffer(area, -(0.75 * side + _EDGE_MARGIN))
    centre = shapely.get_coordinates(area.centroid)[0]
    aim = centre + rng.uniform(-0.1, 0.1, 2) * area.length / 4
    distance = np.hypot(pp - aim[0], qq - aim[1]) + np.where(
        shapely.contains_xy(inner, pp, qq), 0.0, 1e6
    )
    i, j = np.unravel_index(np.argmin(distance), distance.shape)
    return int(i), int(j)


def _drone_block(p: float, q: float, side: float, rng) -> shapely.Polygon:
    """The drone block: an irregular square about `side` m across around (p, q), rotated."""
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * side / 2
    corners = corners + rng.uniform(-0.06, 0.06, corners.shape) * side
    notch = (corners[1] + corners[2]) / 2 * rng.uniform(0.8, 0.92)
    ring = np.concatenate([corners[:2], [notch], corners[2:]])
    angle = rng.uniform(0.25, 0.5) * rng.choice([-1, 1])
    c, s = math.cos(angle), math.sin(angle)
    return shapely.Polygon(ring @ np.array([[c, s], [-s, c]]) + [p, q])


def _seam_building(rng) -> pd.DataFrame:
    """A new building over the local origin, the corner of four analysis tiles (its roof is
    coloured when it is planted)."""
    w, d = rng.uniform(14.0, 24.0, 2)
    p, q = rng.uniform(-0.25, 0.25, 2) * (w, d)
    return _rect_table(p, q, w, d, rng.uniform(-0.03, 0.03), _heights(1, rng), np.zeros((1, 4)))


def _blocks(streets, area, crossing, reserved, rng) -> pd.DataFrame:
    """The blocks between the streets and their land use.

    The four around the drone block's crossing are two villages, a park and a farm, so every
    kind of change finds room there; the block of the tile-corner building is not a pond.
    """
    (p_lines, p_widths), (q_lines, q_widths) = streets
    i, j = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(len(p_lines) - 1), np.arange(len(q_lines) - 1), indexing="ij"
        )
    )
    boxes = shapely.box(
        p_lines[i] + p_widths[i] / 2 + 2.0,
        q_lines[j] + q_widths[j] / 2 + 2.0,
        p_lines[i + 1] - p_widths[i + 1] / 2 - 2.0,
        q_lines[j + 1] - q_widths[j + 1] / 2 - 2.0,
    )
    kind = rng.choice(_BLOCK_KINDS, p=_BLOCK_ODDS, size=len(boxes)).astype(object)
    ci, cj = crossing
    around = ((i == ci) | (i == ci - 1)) & ((j == cj) | (j == cj - 1))
    kind[around] = rng.permutation(["village", "village", "park", "farm"])
    kind[shapely.intersects(boxes, reserved.centroid) & (kind == "pond")] = "village"
    keep = shapely.intersects(boxes, area)
    return pd.DataFrame({"geometry": boxes[keep], "kind": kind[keep]})


def _fill(blocks: pd.DataFrame, rng):
    """Ground patches, buildings and trees of every block."""
    fillers = {
        "village": _village,
        "flats": _flats,
        "sheds": _sheds,
        "park": _park,
        "farm": _farm,
        "pond": _pond,
    }
    parts = [
        fillers[k](*box.bounds, rng) for box, k in zip(blocks.geometry, blocks.kind, strict=True)
    ]
    patches, buildings, trees = zip(*parts, strict=True)
    return _concat(*patches), _concat(*buildings), _concat(*trees)


def _runs(lo: float, hi: float, length, gap, rng) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive intervals (start, end) inside [lo, hi]: lengths and gaps uniform in ranges."""
    n = int((hi - lo) / (length[0] + gap[0])) + 1
    size = rng.uniform(*length, n)
    step = size + rng.uniform(*gap, n)
    start = lo + rng.uniform(0, gap[1]) + np.concatenate([[0.0], np.cumsum(step[:-1])])
    keep = start + size <= hi
    return start[keep], start[keep] + size[keep]


def _lots(p0, q0, p1, q1, length, gap, rng) -> np.ndarray:
    """Rows of lots across a block, each row cut on its own: ``p, q, w, d``, shape (4, n)."""
    q_start, q_end = _runs(q0, q1, length, gap, rng)
    rows = [_runs(p0, p1, length, gap, rng) for _ in q_start]
    counts = [len(start) for start, _ in rows]
    p_start = np.concatenate([start for start, _ in rows] + [np.zeros(0)])
    p_end = np.concatenate([end for _, end in rows] + [np.zeros(0)])
    q_start, q_end = np.repeat(q_start, counts), np.repeat(q_end, counts)
    return np.stack(
        [(p_start + p_end) / 2, (q_start + q_end) / 2, p_end - p_start, q_end - q_start]
    )


def _village(p0, q0, p1, q1, rng):
    """Houses packed in rows, 1.5-4 m apart; some lots are yards or gardens with a tree."""
    p, q, w, d = _lots(p0, q0, p1, q1, (8.0, 15.0), (1.5, 4.0), rng)
    built = rng.random(len(p)) > 0.15
    garden = ~built & (rng.random(len(p)) < 0.5)
    n = int(built.sum())
    trim = rng.uniform(0.0, 1.0, (2, n))
    houses = _rect_table(
        p[built],
        q[built],
        w[built] - trim[0],
        d[built] - trim[1],
        rng.normal(0.0, 0.02, n),
        _heights(n, rng),
        _roof_colours("village", n, rng),
    )
    p, q, w, d = p[garden], q[garden], w[garden], d[garden]
    yards = shapely.box(p - w / 2, q - d / 2, p + w / 2, q + d / 2)
    patches = _concat(
        _patches([shapely.box(p0, q0, p1, q1)], GROUND, rng.uniform(0.9, 1.1, 1)),
        _patches(yards, GRASS, rng.uniform(0.85, 1.15, len(p)), season=rng.random(len(p))),
    )
    trees = _tree_table(p, q, rng.uniform(1.8, 3.5, len(p)), rng.uniform(4.0, 9.0, len(p)), rng)
    return patches, houses, trees


def _flats(p0, q0, p1, q1, rng):
    """Slab blocks of flats, 14-20 m high, in a lawn with trees."""
    p, q, w, d = _lots(p0 + 6, q0 + 6, p1 - 6, q1 - 6, (14.0, 45.0), (16.0, 24.0), rng)
    slab = d < 18.0
    p, q, w, d = p[slab], q[slab], w[slab], np.minimum(d[slab], 16.0)
    n = len(p)
    flats = _rect_table(
        p, q, w, d, np.zeros(n), rng.uniform(14.0, 20.0, n), _roof_colours("flats", n, rng)
    )
    k = int((p1 - p0) * (q1 - q0) / 250)
    trees = _tree_table(
        rng.uniform(p0 + 3, p1 - 3, k),
        rng.uniform(q0 + 3, q1 - 3, k),
        rng.uniform(2.0, 3.5, k),
        rng.uniform(5.0, 10.0, k),
        rng,
    )
    trees = trees[~_hits(_crowns(trees), shapely.buffer(_rects(flats), 2.0))]
    lawn = _patches(
        [shapely.box(p0, q0, p1, q1)], GRASS, rng.uniform(0.9, 1.1, 1), season=rng.random(1)
    )
    return lawn, flats, trees


def _sheds(p0, q0, p1, q1, rng):
    """Large low sheds with steel or coated roofs on a concrete yard."""
    p, q, w, d = _lots(p0 + 4, q0 + 4, p1 - 4, q1 - 4, (20.0, 60.0), (8.0, 15.0), rng)
    n = len(p)
    sheds = _rect_table(
        p, q, w, d, np.zeros(n), rng.uniform(6.0, 12.0, n), _roof_colours("sheds", n, rng)
    )
    yard = _patches([shapely.box(p0, q0, p1, q1)], GROUND, rng.uniform(1.0, 1.2, 1))
    return yard, sheds, _tree_table([], [], [], [], rng)


def _park(p0, q0, p1, q1, rng):
    """Lawn with groups of trees."""
    groups = max(1, int((p1 - p0) * (q1 - q0) / 1500))
    counts = rng.poisson(9, groups)
    centres = rng.uniform((p0, q0), (p1, q1), (groups, 2))
    pq = np.repeat(centres, counts, axis=0) + rng.normal(0.0, 7.0, (counts.sum(), 2))
    radius = rng.uniform(2.0, 4.5, len(pq))
    inside = np.all((pq - radius[:, None] > (p0, q0)) & (pq + radius[:, None] < (p1, q1)), axis=1)
    pq, radius = pq[inside], radius[inside]
    trees = _tree_table(pq[:, 0], pq[:, 1], radius, rng.uniform(5.0, 13.0, len(pq)), rng)
    lawn = _patches(
        [shapely.box(p0, q0, p1, q1)], GRASS, rng.uniform(0.9, 1.1, 1), season=rng.random(1)
    )
    return lawn, _no_rects(), trees


def _farm(p0, q0, p1, q1, rng):
    """Strips of crops and bare soil, a few trees."""
    start, end = _runs(p0, p1, (12.0, 30.0), (0.0, 1.5), rng)
    crop = rng.random(len(start)) < 0.6
    strips = shapely.box(start[crop], q0 + 1, end[crop], q1 - 1)
    patches = _concat(
        _patches([shapely.box(p0, q0, p1, q1)], SOIL, rng.uniform(0.9, 1.1, 1)),
        _patches(
            strips, CROP, rng.uniform(0.85, 1.15, len(strips)), season=rng.random(len(strips))
        ),
    )
    k = rng.poisson(3)
    trees = _tree_table(
        rng.uniform(p0 + 4, p1 - 4, k),
        rng.uniform(q0 + 4, q1 - 4, k),
        rng.uniform(2.0, 4.0, k),
        rng.uniform(4.0, 9.0, k),
        rng,
    )
    return patches, _no_rects(), trees


def _pond(p0, q0, p1, q1, rng):
    """A rounded fish pond in a lawn, trees along its bank."""
    box = shapely.box(p0, q0, p1, q1)
    core = shapely.affinity.scale(box, *rng.uniform(0.45, 0.8, 2))
    water = shapely.buffer(shapely.buffer(core, -6.0), 6.0 * rng.uniform(0.5, 1.5))
    patches = _concat(
        _patches([box], GRASS, rng.uniform(0.9, 1.1, 1), season=rng.random(1)),
        _patches([water], WATER, rng.uniform(0.9, 1.1, 1), layer=1),
    )
    bank = shapely.buffer(water, 5.0).exterior
    xy = shapely.get_coordinates(
        shapely.line_interpolate_point(bank, np.arange(4.0, bank.length, 11.0))
    )
    k = len(xy)
    trees = _tree_table(xy[:, 0], xy[:, 1], rng.uniform(2.0, 3.0, k), rng.uniform(5.0, 8.0, k), rng)
    return patches, _no_rects(), trees


def _river(area, avoid, rng) -> tuple[shapely.Polygon, shapely.Polygon]:
    """A meandering river along p, as far as it can be from the points `avoid`; and its banks."""
    p_lo, q_lo, p_hi, q_hi = area.bounds
    p = np.arange(p_lo - 100, p_hi + 100, 10.0)
    bend = rng.uniform(15, 45) * np.sin(2 * np.pi * p / rng.uniform(500, 900) + rng.uniform(0, 7))
    offsets = np.linspace(q_lo + 0.15 * (q_hi - q_lo), q_hi - 0.15 * (q_hi - q_lo), 15)
    lines = shapely.linestrings(np.stack(np.broadcast_arrays(p, bend + offsets[:, None]), -1))
    centre = lines[np.argmax(np.min([shapely.distance(lines, a) for a in avoid], axis=0))]
    width = rng.uniform(22.0, 32.0)
    return shapely.buffer(centre, width / 2), shapely.buffer(centre, width / 2 + 7)


def _street_trees(roads: pd.DataFrame, rng) -> pd.DataFrame:
    """Trees about every 9 m along both sides of the main roads, some missing."""
    main = roads[roads.main]
    start = main[["p0", "q0"]].to_numpy()
    vector = main[["p1", "q1"]].to_numpy() - start
    length = np.hypot(*vector.T)
    counts = (length / 9.0).astype(int)
    road = np.repeat(np.arange(len(main)), counts)
    along = (np.concatenate([np.arange(c) for c in counts]) + rng.uniform(0.3, 0.7, len(road))) * 9
    side = rng.choice([-1.0, 1.0], len(road)) * (main.width.to_numpy()[road] / 2 + 2.5)
    direction = vector[road] / length[road, None]
    pq = start[road] + direction * along[:, None] + direction[:, ::-1] * [-1, 1] * side[:, None]
    pq = pq[rng.random(len(road)) < 0.8]
    k = len(pq)
    return _tree_table(pq[:, 0], pq[:, 1], rng.uniform(2.2, 3.4, k), rng.uniform(6.0, 9.0, k), rng)


def _cloud_site(area, footprint, reserved, frame: _Frame, rng) -> tuple[float, float, float]:
    """Cloud centre and radius: it and its shadow inside the area, as far as they can be from
    the drone block and the tile-corner building."""
    radius = float(np.clip(0.05 * math.sqrt(area.area), 35.0, 100.0))
    shift = frame.cloud_shift(radius)
    p_lo, q_lo, p_hi, q_hi = area.bounds
    pq = np.stack(np.meshgrid(np.linspace(p_lo, p_hi, 24), np.linspace(q_lo, q_hi, 24)), -1)
    pq = pq.reshape(-1, 2) + rng.uniform(-5, 5, (24 * 24, 2))
    inner = shapely.buffer(area, -1.6 * radius)
    pq = pq[shapely.contains_xy(inner, *pq.T) & shapely.contains_xy(inner, *(pq + shift).T)]
    zones = shapely.union(
        shapely.buffer(shapely.points(pq), 1.6 * radius),
        shapely.buffer(shapely.points(pq + shift), 1.6 * radius),
    )
    score = np.minimum(shapely.distance(zones, footprint), shapely.distance(zones, reserved))
    best = int(np.argmax(score))
    return float(pq[best, 0]), float(pq[best, 1]), radius


# --------------------------------------------------------------------------------------------
# Object tables
# --------------------------------------------------------------------------------------------


def _concat(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True)


def _patches(geoms, cls, tone, *, season=None, layer: int = 0) -> pd.DataFrame:
    """Ground patches of a class (or one class each); `layer` 1 paints water over the ground."""
    geoms = np.asarray(geoms, dtype=object)
    return pd.DataFrame(
        {
            "geometry": geoms,
            "cls": np.broadcast_to(np.asarray(cls, int), len(geoms)),
            "tone": np.asarray(tone, float),
            "season": np.zeros(len(geoms)) if season is None else season,
            "layer": np.full(len(geoms), layer),
        },
        columns=_PATCH_COLUMNS,
    )


def _rect_table(p, q, w, d, a, h, colours) -> pd.DataFrame:
    """Rectangles (_RECT_COLUMNS); scalars are broadcast, `colours` is (n, 4) reflectance."""
    columns = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, float)) for v in (p, q, w, d, a, h))
    )
    table = pd.DataFrame(dict(zip(_RECT_COLUMNS[:6], columns, strict=True)))
    table[list(_BANDS)] = np.asarray(colours, float).reshape(len(table), 4)
    return table


def _no_rects() -> pd.DataFrame:
    return _rect_table(*[[]] * 6, np.zeros((0, 4)))


def _tree_table(p, q, radius, h, rng) -> pd.DataFrame:
    n = len(p)
    return pd.DataFrame(
        {
            "p": np.asarray(p, float),
            "q": np.asarray(q, float),
            "radius": np.asarray(radius, float),
            "h": np.asarray(h, float),
            "tone": rng.uniform(0.8, 1.2, n),
            "season": rng.random(n),
        },
        columns=_TREE_COLUMNS,
    )


def _heights(n: int, rng) -> np.ndarray:
    """House heights (m): 1 to 6 storeys of 3.2 m, shape (n,)."""
    floors = rng.choice(np.arange(1, 7), p=(0.08, 0.17, 0.25, 0.25, 0.15, 0.10), size=n)
    return floors * 3.2 + rng.uniform(0.0, 0.6, n)


def _roof_colours(kind: str, n: int, rng) -> np.ndarray:
    """Roof reflectance for `kind` of building, shape (n, 4)."""
    pick = rng.choice(len(_ROOFS), p=_ROOF_ODDS[kind], size=n)
    return _ROOFS[pick] * rng.uniform(0.85, 1.15, (n, 1))


def _corners(rects: pd.DataFrame) -> np.ndarray:
    """Corners of rectangles, shape (n, 4, 2)."""
    p, q, w, d, a = (rects[k].to_numpy()[:, None] for k in ("p", "q", "w", "d", "a"))
    du = np.array([-0.5, 0.5, 0.5, -0.5]) * w
    dv = np.array([-0.5, -0.5, 0.5, 0.5]) * d
    return np.stack([p + np.cos(a) * du - np.sin(a) * dv, q + np.sin(a) * du + np.cos(a) * dv], -1)


def _rects(rects: pd.DataFrame) -> np.ndarray:
    """Rectangle polygons, shape (n,)."""
    return shapely.polygons(_corners(rects)) if len(rects) else np.empty(0, dtype=object)


def _with_shadows(rects: pd.DataFrame, frame: _Frame) -> np.ndarray:
    """Each building's footprint together with its cast shadow (convex hull), shape (n,)."""
    corners = _corners(rects)
    cast = corners + rects.h.to_numpy()[:, None, None] * frame.shadow()
    return shapely.convex_hull(shapely.multipoints(np.concatenate([corners, cast], axis=1)))


def _crowns(trees: pd.DataFrame) -> np.ndarray:
    return shapely.buffer(shapely.points(trees.p, trees.q), trees.radius.to_numpy(), quad_segs=4)


def _hits(geoms, others) -> np.ndarray:
    """Whether each of `geoms` intersects any of `others`, bool (n,)."""
    hit = np.zeros(len(geoms), bool)
    if len(geoms) and len(others):
        hit[shapely.STRtree(others).query(geoms, predicate="intersects")[0]] = True
    return hit


# --------------------------------------------------------------------------------------------
# Planted changes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    """One epoch's objects besides the town's (local frame)."""

    patches: pd.DataFrame  # _PATCH_COLUMNS, painted after the town's
    buildings: pd.DataFrame  # _RECT_COLUMNS, every building standing
    trees: pd.DataFrame  # _TREE_COLUMNS, every tree standing


@dataclass(frozen=True)
class _Plan:
    """A quarter's planted changes and its two epochs' objects that follow from them."""

    # geometry, kind, permitted, height_m, in_drone, building (the change's row in
    # after.buildings, -1 if none); the second quarter's also case and prior.
    truth: pd.DataFrame
    permits: pd.DataFrame  # geometry, permit_id
    before: _State
    after: _State
    taken: tuple  # where the changes are, with margins, and what later changes keep clear of


def _plant(town: _Town, rng: np.random.Generator) -> _Plan:
    area_km2 = (town.size * _RES) ** 2 / 1e6
    count = {kind: max(1, round(rate * area_km2)) for kind, rate in _RATES.items()}
    n_new = max(1, count["new_building"] - 1)  # besides the building across the tile corner
    placer = _Placer(town, rng)
    where = partial(_region, town)

    gone = [placer.demolition(where(k, count["demolition"])) for k in range(count["demolition"])]
    extensions = _concat(
        *(placer.extension(where(k, count["extension"])) for k in range(count["extension"]))
    )
    new = _concat(
        placer.roofed(town.seam), *(placer.new_building(where(k, n_new)) for k in range(n_new))
    )
    n = count["land_clearing"]
    clearings, rings, felled = zip(*(placer.clearing(where(k, n)) for k in range(n)), strict=True)
    permitted = np.concatenate([[False], np.arange(n_new) % 3 == 0])  # a third, in and out

    rects = _rects(town.buildings)
    clearings = np.array(clearings, dtype=object)
    standing = town.buildings[~town.buildings.index.isin(gone)]
    truth = pd.DataFrame(
        {
            "geometry": np.concatenate([_rects(new), _rects(extensions), rects[gone], clearings]),
            "kind": np.repeat(KINDS, [len(new), len(extensions), len(gone), len(clearings)]),
            "permitted": np.concatenate(
                [permitted, np.zeros(len(extensions) + len(gone) + n, bool)]
            ),
            "height_m": np.concatenate(
                [new.h, extensions.h, town.buildings.h.to_numpy()[gone], np.zeros(n)]
            ),
            "building": np.concatenate(
                [
                    len(standing) + len(extensions) + np.arange(len(new)),
                    len(standing) + np.arange(len(extensions)),
                    np.full(len(gone) + n, -1),
                ]
            ),
        }
    )
    truth["in_drone"] = shapely.within(truth.geometry.to_numpy(), town.footprint)
    ids = np.sort(rng.choice(np.arange(10, 1000), permitted.sum(), replace=False))
    permits = pd.DataFrame(
        {
            "geometry": shapely.buffer(_rects(new[permitted]), 2.5, join_style="mitre"),
            "permit_id": [f"HZ-2024-{i:04d}" for i in ids],
        }
    )
    rings = _patches(rings, GRASS, rng.uniform(0.9, 1.1, n), season=rng.random(n))
    rubble = shapely.buffer(rects[gone], 0.8, join_style="mitre")
    after = _concat(
        rings,
        _patches(clearings, SOIL, rng.uniform(1.05, 1.25, n)),
        _patches(rubble, _debris(town.buildings.iloc[gone])[0], rng.uniform(0.95, 1.05, len(gone))),
    )
    trees = _concat(town.trees, *felled)
    return _Plan(
        truth=truth,
        permits=permits,
        before=_State(rings, town.buildings, trees),
        after=_State(
            after,
            _concat(standing, extensions, new),
            trees[~_hits(_crowns(trees), clearings)],
        ),
        taken=tuple(placer.taken),
    )


def _plant_again(town: _Town, first: _Plan, rng: np.random.Generator) -> _Plan:
    """The second quarter, planted on the first quarter's after epoch.

    Some of the first quarter's illegal buildings (new ones and extensions) grow by a storey or
    two under a new roof ("continued") or are torn down ("demolished"); and new changes of every
    kind appear ("new"), about half as many as in the first quarter, a third of the new
    buildings permitted.
    """
    now = replace(
        town,
        patches=_concat(town.patches, first.after.patches),
        buildings=first.after.buildings,
        trees=first.after.trees,
    )
    area_km2 = (town.size * _RES) ** 2 / 1e6
    count = {kind: max(1, round(rate * area_km2 / 2)) for kind, rate in _RATES.items()}
    n_new = max(2, count["new_building"])  # one permitted, one not at least
    placer = _Placer(now, rng, earlier=first.taken)
    where = partial(_region, town)

    prior, case = _follow_ups(first.truth, rng)
    continued = case == "continued"
    rows = first.truth.building.to_numpy()[prior]
    grown = placer.raised(now.buildings.iloc[rows[continued]])
    torn = rows[~continued]
    gone = [
        placer.demolition(where(k, count["demolition"]), contrast=450.0)
        for k in range(count["demolition"])
    ]
    extensions = _concat(
        *(placer.extension(where(k, count["extension"])) for k in range(count["extension"]))
    )
    new = _concat(*(placer.new_building(where(k, n_new)) for k in range(n_new)))
    n = count["land_clearing"]
    clearings = np.array([placer.lawn_clearing(where(k, n)) for k in range(n)], dtype=object)
    permitted = np.arange(n_new) % 3 == 1

    rects = _rects(now.buildings)
    down = np.concatenate([torn, gone]).astype(int)
    height = now.buildings.h.to_numpy()
    fresh = [len(new), len(extensions), len(gone), n]
    truth = pd.DataFrame(
        {
            "geometry": np.concatenate(
                [
                    _rects(grown),
                    rects[torn],
                    _rects(new),
                    _rects(extensions),
                    rects[gone],
                    clearings,
                ]
            ),
            "kind": np.concatenate(
                [
                    np.repeat(["extension", "demolition"], [len(grown), len(torn)]),
                    np.repeat(KINDS, fresh),
                ]
            ),
            "permitted": np.concatenate(
                [np.zeros(len(prior), bool), permitted, np.zeros(sum(fresh) - n_new, bool)]
            ),
            "height_m": np.concatenate(
                [
                    grown.h - height[rows[continued]],
                    height[torn],
                    new.h,
                    extensions.h,
                    height[gone],
                    np.zeros(n),
                ]
            ),
            "building": -1,
            "case": np.repeat(CASES, [len(grown), len(torn), sum(fresh)]),
            "prior": pd.array(
                [*prior[continued], *prior[~continued], *[None] * sum(fresh)], dtype="Int64"
            ),
        }
    )
    truth["in_drone"] = shapely.within(truth.geometry.to_numpy(), town.footprint)
    ids = np.sort(rng.choice(np.arange(1000, 10000), permitted.sum(), replace=False))
    permits = pd.DataFrame(
        {
            "geometry": shapely.buffer(_rects(new[permitted]), 2.5, join_style="mitre"),
            "permit_id": [f"HZ-2024-{i:04d}" for i in ids],
        }
    )
    rubble = shapely.buffer(rects[down], 0.8, join_style="mitre")
    after = _concat(
        first.after.patches,
        _patches(clearings, SOIL, rng.uniform(1.05, 1.25, n)),
        _patches(rubble, _debris(now.buildings.iloc[down])[0], rng.uniform(0.95, 1.05, len(down))),
    )
    standing = now.buildings.copy()
    standing.loc[grown.index] = grown
    return _Plan(
        truth=truth,
        permits=permits,
        before=first.after,
        after=_State(
            after,
            _concat(standing.drop(index=down), extensions, new),
            now.trees[~_hits(_crowns(now.trees), clearings)],
        ),
        taken=tuple(placer.taken),
    )


def _region(town: _Town, k: int, n: int) -> shapely.Geometry:
    """Where the `k`-th of `n` changes of a kind goes: the first third in the drone block."""
    if k < math.ceil(n / 3):
        return shapely.intersection(shapely.buffer(town.footprint, -6.0), town.interior)
    return town.interior


def _follow_ups(truth: pd.DataFrame, rng) -> tuple[np.ndarray, np.ndarray]:
    """The first quarter's changes the second follows up, and the case of each.

    A third (at least two) of the illegal new buildings and extensions, taken in and out of the
    drone block by turns, their cases ``continued, demolished, demolished, continued, ...``:
    so each case has both kinds of coverage as soon as there are four.

    Returns
    -------
    prior : ndarray of int
        Rows of `truth`, shape (n,).
    case : ndarray of str
        ``continued`` or ``demolished``, shape (n,).
    """
    built = truth.kind.isin(["new_building", "extension"]) & ~truth.permitted
    rows = rng.permutation(np.flatnonzero(built))
    inside = truth.in_drone.to_numpy()[rows]
    turn = np.where(inside, np.cumsum(inside), np.cumsum(~inside))  # 1, 2, ... in each group
    rows = rows[np.lexsort((~inside, turn))][: max(2, round(len(rows) / 3))]
    cases = np.array(["continued", "demolished", "demolished", "continued"])
    return rows, cases[np.arange(len(rows)) % 4]


def _debris(roofs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The class of debris left by each demolished building: brick and soil or concrete
    dust, whichever stands out more from its roof in the visible bands; and by how much
    (reflectance distance)."""
    visible = roofs[["blue", "green", "red"]].to_numpy()
    candidates = np.array([RUBBLE, DUST])
    distance = np.linalg.norm(visible[:, None, :] - _REFLECTANCE[candidates, :3], axis=2)
    return candidates[np.argmax(distance, axis=1)], distance.max(axis=1, initial=0.0)


class _Placer:
    """Finds room for the planted changes one after the other, by rejection sampling.

    Changes keep clear of each other and of the cloud; new buildings and extensions also of
    buildings, roads, water and trees. A clearing may take trees: that is what it clears.
    With `earlier` (an earlier quarter's :attr:`_Plan.taken`) they also keep clear of that
    quarter's changes, and leave the buildings next to them as they are.
    """

    def __init__(self, town: _Town, rng: np.random.Generator, *, earlier: tuple = ()):
        self.town = town
        self.rng = rng
        self.rects = _rects(town.buildings)
        water = town.patches.geometry[town.patches.cls == WATER]
        self.solid = [*self.rects, *town.roads.geometry, *water]
        self.crowns = list(_crowns(town.trees))
        seam = shapely.union_all(_with_shadows(town.seam, town.frame))
        self.taken = list(earlier) or [town.cloud_zone, shapely.buffer(seam, 4.0)]
        # Buildings extended or demolished, or next to an earlier quarter's changes.
        near = _hits(shapely.buffer(self.rects, 4.0), np.array(earlier, dtype=object))
        self.used: set[int] = set(np.flatnonzero(near).tolist())
        # How much of each roof lies in the shadow of others (a demolition there would leave
        # shaded debris, hard to tell from the roof it replaces).
        self.hulls = _with_shadows(town.buildings, town.frame)
        roof, other = shapely.STRtree(self.hulls).query(self.rects, predicate="intersects")
        roof, other = roof[roof != other], other[roof != other]
        shaded = shapely.area(shapely.intersection(self.rects[roof], self.hulls[other]))
        self.shaded = np.bincount(roof, shaded, len(self.rects)) / shapely.area(self.rects)

    def _free(self, geoms: np.ndarray, *, trees: bool = True) -> np.ndarray:
        against = self.solid + self.taken + (self.crowns if trees else [])
        return ~_hits(geoms, np.array(against, dtype=object))

    def _pick(self, ok: np.ndarray, what: str) -> int:
        if not ok.any():
            raise RuntimeError(f"no room for a planted {what}: the demo layout is too crowded")
        return int(self.rng.choice(np.flatnonzero(ok)))

    def _points(self, region: shapely.Geometry, n: int) -> np.ndarray:
        if region.is_empty:
            return np.zeros((0, 2))
        p_lo, q_lo, p_hi, q_hi = region.bounds
        pq = self.rng.uniform((p_lo, q_lo), (p_hi, q_hi), (n, 2))
        return pq[shapely.contains_xy(region, pq[:, 0], pq[:, 1])]

    def new_building(self, region: shapely.Geometry) -> pd.DataFrame:
        """A building of 10-35 m a side, with room for its shadow, on open ground."""
        for largest in (35.0, 24.0, 16.0):  # smaller ones fit where big ones do not
            pq = self._points(region, 400)
            n = len(pq)
            cand = _rect_table(
                pq[:, 0],
                pq[:, 1],
                *self.rng.uniform(10.0, largest, (2, n)),
                self.rng.uniform(-0.04, 0.04, n),
                _heights(n, self.rng),
                np.zeros((n, 4)),
            )
            reach = shapely.buffer(_with_shadows(cand, self.town.frame), 3.0)
            ok = self._free(reach) & shapely.within(_rects(cand), region)
            if ok.any():
                break
        k = self._pick(ok, "new building")
        self.taken.append(reach[k])
        return self.roofed(cand.iloc[[k]])

    def roofed(self, building: pd.DataFrame, *, keep: bool = False) -> pd.DataFrame:
        """`building` (one row) with a roof that stands out from the ground it covers: its
        own colour with `keep` if that does, else a palette colour that does."""
        patches = self.town.patches
        p, q = building.p.item(), building.q.item()
        on = shapely.contains_xy(patches.geometry.to_numpy(), p, q) & (patches.layer == 0)
        top = patches[on].iloc[-1] if on.any() else {"cls": GROUND, "tone": 1.0}
        ground = _REFLECTANCE[top["cls"]] * top["tone"]
        if shapely.contains_xy(self.hulls, p, q).any():  # in another building's shadow
            ground = ground * _SHADE
        colours = np.concatenate([building[list(_BANDS)].to_numpy(), _ROOFS]) if keep else _ROOFS
        contrast = np.linalg.norm(colours[:, :3] - ground[:3], axis=1) >= 450.0
        pick = 0 if keep and contrast[0] else self.rng.choice(np.flatnonzero(contrast))
        out = building.copy()
        out[list(_BANDS)] = colours[pick] * self.rng.uniform(0.92, 1.08)
        return out

    def extension(self, region: shapely.Geometry) -> pd.DataFrame:
        """A block 5-9 m deep built against one wall of an existing building."""
        b = _concat(*[self.town.buildings] * 4)  # a candidate per wall
        parent = np.tile(np.arange(len(self.town.buildings)), 4)
        wall = np.repeat(np.arange(4), len(self.town.buildings))
        n = len(b)
        depth = self.rng.uniform(5.0, 9.0, n)
        wall_length = np.where(wall < 2, b.d, b.w)
        length = np.maximum(wall_length * self.rng.uniform(0.6, 1.0, n), 6.0)
        slide = (wall_length - length) / 2 * self.rng.uniform(-1.0, 1.0, n)
        cand = _attach(b, wall, depth, length, slide)
        room = _attach(b, wall, depth + 1.2, length + 2.0, slide, gap=0.3)
        ok = self._free(_rects(room)) & shapely.within(_rects(cand), region)
        ok &= (np.minimum(b.w, b.d).to_numpy() >= 6.0) & ~np.isin(parent, list(self.used))
        k = self._pick(ok, "extension")
        self.used.add(int(parent[k]))
        self.taken.append(_rects(room.iloc[[k]])[0])
        ext = self.roofed(cand.iloc[[k]], keep=True)
        ext["h"] = np.clip(ext.h + self.rng.choice([-3.2, 0.0, 0.0, 3.2]), 3.2, 20.0)
        return ext

    def demolition(self, region: shapely.Geometry, *, contrast: float = 0.0) -> int:
        """An existing building at least 8 m a side whose debris differs from its roof by at
        least `contrast` (visible reflectance); returns its row in the town's table."""
        b = self.town.buildings
        reach = shapely.buffer(self.rects, 4.0)
        ok = shapely.within(self.rects, region) & (np.minimum(b.w, b.d).to_numpy() >= 8.0)
        ok &= ~b.index.isin(list(self.used)) & ~_hits(reach, np.array(self.taken, dtype=object))
        ok &= (self.shaded < 0.25) & (_debris(b)[1] >= contrast)
        k = self._pick(ok, "demolition")
        self.used.add(k)
        self.taken.append(reach[k])
        return k

    def clearing(self, region: shapely.Geometry):
        """A patch of 320-1400 m2 to clear, the vegetated ring left around it and the trees on
        it; parks, farms and lawns first."""
        blocks = self.town.blocks
        green = shapely.union_all(blocks.geometry[blocks.kind.isin(["park", "farm", "flats"])])
        clearing = self._clearing(
            (shapely.intersection(region, green), 1400.0, region),
            (region, 1400.0, region),
            (region, 600.0, region),
        )
        n = int(clearing.area / 120)
        pq = self._points(shapely.buffer(clearing, -3.0), 20 * n)[:n]
        felled = _tree_table(
            pq[:, 0],
            pq[:, 1],
            self.rng.uniform(2.0, 3.5, len(pq)),
            self.rng.uniform(4.0, 8.0, len(pq)),
            self.rng,
        )
        return clearing, shapely.buffer(clearing, self.rng.uniform(5.0, 9.0)), felled

    def lawn_clearing(self, region: shapely.Geometry) -> shapely.Polygon:
        """A patch of 320-1400 m2 of the grass or crops that grow there, to clear (with the
        trees on it); in `region` if there is room, else anywhere in the area."""
        patches = self.town.patches
        green = shapely.union_all(
            patches.geometry[patches.cls.isin([GRASS, CROP]) & (patches.layer == 0)]
        )
        lawns = [shapely.intersection(r, green) for r in (region, self.town.interior)]
        return self._clearing(
            *((lawn, largest, lawn) for lawn in lawns for largest in (1400.0, 600.0))
        )

    def _clearing(self, *tries) -> shapely.Polygon:
        """A blob around a point of `region` and inside `within`, from the first of `tries`
        ``(region, largest area, within)`` that has room for one."""
        for region, largest, within in tries:
            pq = self._points(region, 200)
            shapes = np.array([_blob(p, q, largest, self.rng) for p, q in pq], dtype=object)
            reach = shapely.buffer(shapes, 3.0)
            ok = self._free(reach, trees=False) & shapely.within(shapes, within)
            if ok.any():
                break
        k = self._pick(ok, "land clearing")
        self.taken.append(reach[k])
        return shapes[k]

    def raised(self, buildings: pd.DataFrame) -> pd.DataFrame:
        """`buildings` one or two storeys higher under roofs of another colour; where they and
        their longer shadows now reach is taken."""
        colours = buildings[list(_BANDS)].to_numpy()
        other = np.linalg.norm(_ROOFS[None, :, :3] - colours[:, None, :3], axis=2) >= 450.0
        pick = np.argmax(self.rng.random(other.shape) * other, axis=1)
        out = buildings.copy()
        out[list(_BANDS)] = _ROOFS[pick] * self.rng.uniform(0.92, 1.08, (len(out), 1))
        out["h"] = buildings.h + 3.2 * self.rng.integers(1, 3, len(out))
        self.taken.extend(shapely.buffer(_with_shadows(out, self.town.frame), 3.0))
        return out


def _attach(b: pd.DataFrame, wall, depth, length, slide, *, gap: float = 0.0) -> pd.DataFrame:
    """Rectangles against one wall of each building (0: +w, 1: -w, 2: +d, 3: -d side).

    Each is `depth` m deep, starts `gap` m off the wall, runs `length` m along it, slid `slide`
    m from the wall's middle, and keeps the building's axis, height and colour.
    """
    a = b.a.to_numpy()
    on_w = wall < 2
    axis_w = np.stack([np.cos(a), np.sin(a)], -1)
    axis_d = np.stack([-np.sin(a), np.cos(a)], -1)
    out = np.where(on_w[:, None], axis_w, axis_d) * np.where(wall % 2 == 0, 1.0, -1.0)[:, None]
    lateral = np.where(on_w[:, None], axis_d, axis_w)
    half = np.where(on_w, b.w, b.d) / 2
    centre = (
        b[["p", "q"]].to_numpy()
        + out * (half + gap + depth / 2)[:, None]
        + lateral * slide[:, None]
    )
    return _rect_table(
        centre[:, 0],
        centre[:, 1],
        np.where(on_w, depth, length),
        np.where(on_w, length, depth),
        a,
        b.h,
        b[list(_BANDS)].to_numpy(),
    )


def _blob(p: float, q: float, largest: float, rng) -> shapely.Polygon:
    """An irregular star-shaped polygon of 320 m2 to `largest` m2 around (p, q)."""
    angle = np.sort(rng.uniform(0, 2 * np.pi, 9))
    radius = rng.uniform(0.75, 1.25, 9)
    shape = shapely.Polygon(np.stack([np.cos(angle) * radius, np.sin(angle) * radius], -1))
    scale = math.sqrt(rng.uniform(320.0, largest) / shape.area)
    return shapely.affinity.affine_transform(shape, [scale, 0, 0, scale, p, q])


# --------------------------------------------------------------------------------------------
# Each epoch's scene: what to paint, in order, in EPSG:4547
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    """One epoch's objects in paint order, and the shadows they cast (EPSG:4547)."""

    paint: gpd.GeoDataFrame  # geometry, cls, blue, green, red, nir, z (height above ground, m)
    shadows: np.ndarray  # polygons


def _scene(town: _Town, state: _State, *, summer: bool, rng: np.random.Generator) -> _Scene:
    """The scene of an epoch: the town with `state`'s objects, and cars; with `summer`
    (June and September) vegetation has greened up."""
    patches = _concat(town.patches, state.patches)
    buildings, trees = state.buildings, state.trees
    colours = buildings[list(_BANDS)].to_numpy()
    roofs = buildings.assign(w=buildings.w - 0.9, d=buildings.d - 0.9)  # inside the parapet
    cars = _cars(town.roads, rng)
    paint = (
        _concat(
            _paint(
                patches.geometry,
                patches.cls,
                patches.tone,
                patches.layer,
                season=patches.season if summer else None,
                z=np.where(np.isin(patches.cls, (RUBBLE, DUST)), 0.5, 0.0),
            ),
            _paint(town.roads.geometry, ROAD, town.roads.tone, 2),
            _paint(
                _crowns(trees),
                TREE,
                trees.tone,
                3,
                season=trees.season if summer else None,
                z=trees.h,
            ),
            _paint(_rects(buildings), ROOF, 1.0, 4, colours=colours * 0.8, z=buildings.h),
            _paint(_rects(roofs), ROOF, 1.0, 4, colours=colours, z=buildings.h),
            _paint(_rects(cars), CAR, 1.0, 5, colours=cars[list(_BANDS)].to_numpy(), z=1.5),
        )
        .sort_values("layer", kind="stable")
        .drop(columns="layer")
    )
    cast = trees[["p", "q"]].to_numpy() + np.outer(0.85 * trees.h, town.frame.shadow())
    shadows = np.concatenate(
        [
            _with_shadows(buildings, town.frame),
            shapely.buffer(shapely.points(cast), trees.radius.to_numpy(), quad_segs=4),
        ]
    )
    paint = gpd.GeoDataFrame(
        paint, geometry=town.frame.to_world(paint.geometry.to_numpy()), crs=_GRID_CRS
    )
    return _Scene(paint.reset_index(drop=True), town.frame.to_world(shadows))


def _paint(geoms, cls, tone, layer, *, colours=None, season=None, z=0.0) -> pd.DataFrame:
    """Rows of a paint table.

    Reflectance is `colours` (n, 4) if given, else the class's, times `tone`; `season` (0-1
    per row) greens vegetation up for summer.
    """
    geoms = np.asarray(geoms, dtype=object)
    n = len(geoms)
    cls = np.broadcast_to(np.asarray(cls, np.uint8), n)
    refl = _REFLECTANCE[cls] if colours is None else np.asarray(colours, float)
    refl = refl * np.broadcast_to(np.asarray(tone, float), n)[:, None]
    if season is not None:
        u = np.asarray(season, float)[:, None]
        summer = np.concatenate(
            [0.97 - 0.05 * u, 1.0 + 0.1 * u, 0.95 - 0.2 * u, 1.05 + 0.25 * u], 1
        )
        refl = np.where(_GREEN[cls][:, None], refl * summer, refl)
    table = pd.DataFrame(refl, columns=list(_BANDS))
    table.insert(0, "cls", cls)
    table.insert(0, "geometry", geoms)
    table["z"] = np.broadcast_to(np.asarray(z, float), n)
    table["layer"] = np.broadcast_to(np.asarray(layer), n)
    return table


def _cars(roads: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Cars (4.5 m x 1.8 m) in the lanes, about one per 40 m of main road, 90 m of street."""
    start = roads[["p0", "q0"]].to_numpy()
    vector = roads[["p1", "q1"]].to_numpy() - start
    length = np.hypot(*vector.T)
    road = np.repeat(np.arange(len(roads)), rng.poisson(length / np.where(roads.main, 40.0, 90.0)))
    n = len(road)
    direction = vector[road] / length[road, None]
    lane = (
        np.where(
            roads.main.to_numpy()[road],
            rng.choice([-0.38, -0.13, 0.13, 0.38], n),
            rng.choice([-0.25, 0.25], n),
        )
        * roads.width.to_numpy()[road]
    )
    pq = (
        start[road]
        + direction * (rng.random(n) * length[road])[:, None]
        + direction[:, ::-1] * [-1, 1] * lane[:, None]
    )
    angle = np.arctan2(direction[:, 1], direction[:, 0]) + rng.normal(0.0, 0.02, n)
    colours = _CARS[rng.choice(len(_CARS), p=_CAR_ODDS, size=n)]
    return _rect_table(pq[:, 0], pq[:, 1], 4.5, 1.8, angle, 1.5, colours)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    crs: str
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass(frozen=True)
class _World:
    """Smooth fields every product samples, on a coarse EPSG:4547 grid."""

    grid: _Grid
    texture: np.ndarray  # (h, w) float32: brightness variation, standard deviation 1
    ground: np.ndarray  # (h, w) float32: ground elevation, m


def _world(town: _Town, rng: np.random.Generator) -> _World:
    cell, margin = 4.0, 300.0
    n = int((town.size * _RES + 2 * margin) / cell)
    left, top = _ORIGIN
    grid = _Grid(_GRID_CRS, Affine(cell, 0, left - margin, 0, -cell, top + margin), n, n)
    texture = 0.8 * _noise((n, n), 3, rng) + 0.6 * _noise((n, n), 15, rng)
    rows, cols = np.mgrid[:n, :n]
    ground = 18.0 + 0.024 * (cols - rows) + 4.0 * _noise((n, n), 60, rng)  # gentle hills
    return _World(grid, texture / texture.std(), ground.astype(np.float32))


def _noise(shape: tuple[int, int], cell: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise with features about `cell` px across; float32, mean 0, std 1."""
    coarse = rng.standard_normal((shape[0] // cell + 4, shape[1] // cell + 4))
    field = ndimage.zoom(coarse, cell, order=3)[: shape[0], : shape[1]]
    return ((field - field.mean()) / field.std()).astype(np.float32)


def _warp(array: np.ndarray, src: _Grid, dst: _Grid) -> np.ndarray:
    """`array` on grid `src` resampled (bilinear) onto grid `dst`, float32."""
    out = np.empty(dst.shape, np.float32)
    warp.reproject(
        array,
        out,
        src_transform=src.transform,
        src_crs=src.crs,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        resampling=Resampling.bilinear,
        num_threads=2,
    )
    return out


def _to_crs(crs: str):
    """A function for shapely.transform from EPSG:4547 to `crs`."""
    forward = Transformer.from_crs(_GRID_CRS, crs, always_xy=True)
    return lambda xy: np.stack(forward.transform(xy[:, 0], xy[:, 1]), -1)


def _rasterise(scene: _Scene, grid: _Grid) -> tuple[np.ndarray, gpd.GeoDataFrame]:
    """Which paint row shows at each pixel (1-based, 0 = bare background), int32 (h, w); and
    the paint table in `grid`'s CRS."""
    paint = scene.paint if grid.crs == _GRID_CRS else scene.paint.to_crs(grid.crs)
    rows = features.rasterize(
        zip(paint.geometry, range(1, len(paint) + 1), strict=True),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0,
        dtype="int32",
    )
    return rows, paint


def _lookup(paint: gpd.GeoDataFrame, column: str, background) -> np.ndarray:
    """A paint column with the background in front, to index with :func:`_rasterise`'s ids."""
    return np.concatenate([[background], paint[column].to_numpy()]).astype(np.float32)


def _crowns_profile(rows, cls, paint, grid: _Grid, *, lit: bool) -> tuple[tuple, np.ndarray]:
    """Tree pixels (an index) and their crown profile, 1 at the top and 0 at the rim (float32).

    With `lit` the profile peaks towards the sun (south-east), which shades the crown.
    """
    where = np.nonzero(cls == TREE)
    crowns = paint.geometry.to_numpy()
    xy = shapely.get_coordinates(shapely.centroid(crowns))
    col, row = ~grid.transform @ (xy[:, 0], xy[:, 1])
    radius = np.sqrt(shapely.area(crowns) / np.pi) / grid.transform.a
    k = rows[where] - 1
    dc = where[1] + 0.5 - col[k]
    dr = where[0] + 0.5 - row[k]
    if lit:
        dc, dr = dc - 0.3 * radius[k], dr - 0.25 * radius[k]
    profile = np.sqrt(np.clip(1.0 - (dc * dc + dr * dr) / radius[k] ** 2, 0.0, 1.0))
    return where, profile.astype(np.float32)


def _reflectance(scene: _Scene, grid: _Grid, texture, fine, *, fine_amp, bands) -> np.ndarray:
    """The scene's reflectance (x 10000) on `grid`, float32 (len(bands), h, w).

    `texture` and `fine` are (h, w) float32 fields of standard deviation 1, smooth and per
    pixel; `fine_amp` scales the latter per class.
    """
    rows, paint = _rasterise(scene, grid)
    cls = _lookup(paint, "cls", GROUND).astype(np.uint8)[rows]
    light = 1.0 + _LOW_AMP[cls] * texture + fine_amp[cls] * fine
    where, profile = _crowns_profile(rows, cls, paint, grid, lit=True)
    light[where] *= 0.55 + 0.6 * profile
    shadows = (
        scene.shadows
        if grid.crs == _GRID_CRS
        else shapely.transform(scene.shadows, _to_crs(grid.crs))
    )
    shade = (
        features.rasterize(
            shadows, out_shape=grid.shape, transform=grid.transform, dtype="uint8"
        ).astype(bool)
        & _AT_GROUND[cls]
    )
    out = np.empty((len(bands), *grid.shape), np.float32)
    for k, band in enumerate(bands):
        b = _BANDS.index(band)
        out[k] = _lookup(paint, band, _REFLECTANCE[GROUND, b])[rows] * light
        out[k][shade] *= _SHADE[b]
    return out


def _heights_above_datum(scene: _Scene, grid: _Grid, ground, fine) -> np.ndarray:
    """The scene's surface (m): ground plus roofs, crowns, cars and rubble; NaN on water
    (image matching fails there). float32 (h, w)."""
    rows, paint = _rasterise(scene, grid)
    cls = _lookup(paint, "cls", GROUND).astype(np.uint8)[rows]
    z = _lookup(paint, "z", 0.0)[rows]
    where, profile = _crowns_profile(rows, cls, paint, grid, lit=False)
    z[where] *= 0.35 + 0.65 * profile
    z += ground + np.where((cls == RUBBLE) | (cls == DUST), 0.46, 0.06).astype(np.float32) * fine
    z[cls == WATER] = np.nan
    return z


# --------------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------------


def _misregistration(rng: np.random.Generator) -> np.ndarray:
    """Displacement (col, row) of a later satellite scene: 1.2-2.8 px in any direction."""
    angle = rng.uniform(0, 2 * np.pi)
    return rng.uniform(1.2, 2.8) * np.array([math.cos(angle), math.sin(angle)])


def _write_satellite(folder: Path, town, scenes, world, shifts, seed: int, bar) -> list:
    """Write each epoch's satellite scene as two files; return the cloud's outlines
    (cloud, its shadow) in EPSG:4547.

    The scenes after the first are displaced by `shifts` (one per scene, col and row px) and
    have their own radiometry; the second one has the cloud.
    """
    left, top = _ORIGIN
    grid = _Grid(_GRID_CRS, Affine(_RES, 0, left, 0, -_RES, top), town.size, town.size)
    texture = _warp(world.texture, world.grid, grid)
    fine = np.random.default_rng([seed, 5]).standard_normal(grid.shape, dtype=np.float32)
    outlines = []
    for e, scene in enumerate(scenes):
        rng = np.random.default_rng([seed, 6, e])
        img = _reflectance(scene, grid, texture, fine, fine_amp=_FINE_SAT, bands=_BANDS)
        for k in range(len(img)):
            img[k] = ndimage.gaussian_filter(img[k], 0.6)  # the optics' blur
            if e > 0:
                col, row = shifts[e - 1]
                img[k] = ndimage.shift(img[k], (row, col), order=1, mode="nearest")
        if e == 1:
            outlines = _cloud(img, town, grid, rng)
        if e > 0:
            gain, offset, gamma = _RADIOMETRY[e - 1]
            img = gain * 10000.0 * (np.maximum(img, 1.0) / 10000.0) ** gamma + offset
        img += rng.standard_normal(img.shape, dtype=np.float32) * (20.0 + 0.01 * img)
        dn = np.clip(np.rint(img), 1, 65535).astype(np.uint16)
        dn[:, _edges(grid.shape, rng)] = 0
        _write_halves(folder, EPOCHS[e][0], dn, grid, rng)
        bar.update()
    return outlines


def _cloud(img: np.ndarray, town: _Town, grid: _Grid, rng) -> list:
    """Blend a cloud and its shadow into `img` (in place); return their outlines."""
    p, q, radius = town.cloud
    ((x, y),) = shapely.get_coordinates(town.frame.to_world(shapely.Point(p, q)))
    n = int(3.2 * radius / _RES)
    fluff = _noise((n, n), max(4, int(radius / 5 / _RES)), rng)
    v, u = (np.mgrid[:n, :n] + 0.5 - n / 2) * _RES / radius
    angle = rng.uniform(0, np.pi)
    along = u * math.cos(angle) + v * math.sin(angle)
    across = (v * math.cos(angle) - u * math.sin(angle)) / 0.7
    alpha = 0.97 * np.clip((1.0 - np.hypot(along, across) + 0.25 * fluff) / 0.5, 0.0, 1.0) ** 1.5
    col, row = np.round(~grid.transform @ (x, y)).astype(int) - n // 2
    shift = _SHADOW * [1, -1] / np.hypot(*_SHADOW) * _CLOUD_SHIFT * radius / _RES
    dcol, drow = np.round(shift).astype(int)
    cloud = _place(alpha, grid.shape, row, col)
    shadow = _place(alpha, grid.shape, row + drow, col + dcol)
    dark = np.array([0.55, 0.6, 0.63, 0.66], np.float32)[:, None, None]
    white = np.array([4300, 4400, 4500, 4800], np.float32)[:, None, None]
    img *= 1.0 - dark * shadow
    img += cloud * (white * (0.9 + 0.1 * _place(fluff, grid.shape, row, col)) - img)
    return [
        _outline(alpha > 0.05, grid.transform @ Affine.translation(c, r))
        for r, c in ((row, col), (row + drow, col + dcol))
    ]


def _place(patch: np.ndarray, shape: tuple[int, int], row: int, col: int) -> np.ndarray:
    """`patch` pasted with its corner at (row, col) into zeros of `shape`, clipped; float32."""
    out = np.zeros(shape, np.float32)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + patch.shape[0], shape[0]), min(col + patch.shape[1], shape[1])
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = patch[r0 - row : r1 - row, c0 - col : c1 - col]
    return out


def _outline(mask: np.ndarray, transform: Affine) -> shapely.Geometry:
    shapes = features.shapes(mask.astype(np.uint8), mask=mask, transform=transform)
    return shapely.union_all([shapely.geometry.shape(geom) for geom, _ in shapes])


def _edges(shape: tuple[int, int], rng) -> np.ndarray:
    """Nodata along a scene's four edges, ragged, up to 8-40 px deep; bool (h, w)."""
    h, w = shape
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    top, bottom, left, right = (_ragged(n, rng.uniform(8, 40), rng) for n in (w, w, h, h))
    return (
        (rows < top[None, :])
        | (rows >= h - bottom[None, :])
        | (cols < left[:, None])
        | (cols >= w - right[:, None])
    )


def _ragged(n: int, depth: float, rng) -> np.ndarray:
    """A ragged depth (px) between 0 and `depth` along an edge of `n` px, int (n,)."""
    knots = np.linspace(0, n - 1, max(3, n // 150))
    line = np.interp(np.arange(n), knots, rng.uniform(0, depth, len(knots)))
    return np.round(line + rng.uniform(-1.5, 1.5, n)).clip(0, depth).astype(int)


def _write_halves(folder: Path, epoch: str, dn: np.ndarray, grid: _Grid, rng) -> None:
    """Write a scene as west and east files overlapping by _OVERLAP px, their inner edges
    ragged (each still reaches 5 px past the middle)."""
    half = grid.width // 2
    west = dn[:, :, : half + _OVERLAP // 2].copy()
    east = dn[:, :, half - _OVERLAP // 2 :].copy()
    cut = _OVERLAP // 2 - 5
    ragged_west, ragged_east = _ragged(grid.height, cut, rng), _ragged(grid.height, cut, rng)
    west[:, np.arange(west.shape[2]) >= west.shape[2] - ragged_west[:, None]] = 0
    east[:, np.arange(east.shape[2]) < ragged_east[:, None]] = 0
    interp = (ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined)
    for name, part, col in (("w", west, 0), ("e", east, half - _OVERLAP // 2)):
        part_grid = _Grid(
            _GRID_CRS, grid.transform @ Affine.translation(col, 0), part.shape[2], grid.height
        )
        _write_raster(
            folder / f"sat_{epoch}_{name}.tif",
            part,
            part_grid,
            nodata=0,
            colorinterp=interp,
            descriptions=_BANDS,
        )


def _write_drone(folder: Path, town: _Town, scenes, world: _World, seed: int, bar) -> None:
    """Write each epoch's drone orthomosaic (RGBA, 0.1 m) and DSM (0.2 m), UTM 50N."""
    outline = shapely.transform(town.frame.to_world(town.footprint), _to_crs(_DRONE_CRS))
    grid = _utm_grid(outline, _DRONE_RES)
    inside = features.rasterize(
        [outline], out_shape=grid.shape, transform=grid.transform, dtype="uint8"
    ).astype(bool)
    texture = _warp(world.texture, world.grid, grid)
    fine = np.random.default_rng([seed, 7]).standard_normal(grid.shape, dtype=np.float32)
    interp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha)
    for e, scene in enumerate(scenes):
        rng = np.random.default_rng([seed, 8, e])
        refl = _reflectance(
            scene, grid, texture, fine, fine_amp=_FINE_DRONE, bands=("red", "green", "blue")
        )
        rgba = np.zeros((4, *grid.shape), np.uint8)
        for k in range(3):
            value = 255.0 * np.clip(refl[k] * _BALANCE[e][k] / 2600.0, 0.0, 1.0) ** 0.6
            value += rng.standard_normal(grid.shape, dtype=np.float32) * 2.0
            rgba[k] = np.clip(np.rint(value), 0, 255)
        rgba[:3, ~inside] = 0
        rgba[3] = inside * np.uint8(255)
        _write_raster(
            folder / f"drone_{EPOCHS[e][0]}.tif",
            rgba,
            grid,
            colorinterp=interp,
            photometric="RGB",
            alpha="YES",
        )
        bar.update()
    del texture, fine, inside
    grid = _utm_grid(outline, _DSM_RES)
    inside = features.rasterize(
        [outline], out_shape=grid.shape, transform=grid.transform, dtype="uint8"
    ).astype(bool)
    ground = _warp(world.ground, world.grid, grid)
    for e, scene in enumerate(scenes):
        fine = np.random.default_rng([seed, 9, e]).standard_normal(grid.shape, dtype=np.float32)
        z = _heights_above_datum(scene, grid, ground + _DATUM[e], fine)
        z[~inside | np.isnan(z)] = _DSM_NODATA
        _write_raster(
            folder / f"dsm_{EPOCHS[e][0]}.tif",
            z[None],
            grid,
            nodata=_DSM_NODATA,
            descriptions=("height",),
        )
        bar.update()


def _utm_grid(outline: shapely.Geometry, res: float) -> _Grid:
    """A north-up UTM grid of `res` m around `outline`, its corners on whole metres."""
    x0, y0 = np.floor(outline.bounds[:2])
    x1, y1 = np.ceil(outline.bounds[2:])
    return _Grid(
        _DRONE_CRS, Affine(res, 0, x0, 0, -res, y1), round((x1 - x0) / res), round((y1 - y0) / res)
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces `path` when the block succeeds."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_raster(
    path: Path,
    data: np.ndarray,
    grid: _Grid,
    *,
    nodata=None,
    colorinterp=None,
    descriptions=(),
    **options,
) -> None:
    """Write (bands, h, w) `data` as a tiled, deflated GeoTIFF."""
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(data),
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 3 if data.dtype.kind == "f" else 2,
        "num_threads": "ALL_CPUS",
        **options,
    }
    with _atomic(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = colorinterp
            for k, text in enumerate(descriptions, start=1):
                dst.set_band_description(k, text)


def _write_gpkg(path: Path, layers: dict[str, gpd.GeoDataFrame]) -> None:
    with _atomic(path) as tmp:
        for name, frame in layers.items():
            pyogrio.write_dataframe(frame, tmp, layer=name, driver="GPKG")


def _write_text(path: Path, text: str) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_vectors(root: Path, town: _Town, plans: list[_Plan], clouds: list, rng) -> None:
    world = town.frame.to_world

    def frame(table: pd.DataFrame, fields: list[str]) -> gpd.GeoDataFrame:
        geometry = world(table.geometry.to_numpy())
        return gpd.GeoDataFrame(table[fields], geometry=geometry, crs=_GRID_CRS)

    fields = ["kind", "permitted", "in_drone", "height_m"]
    nuisance = gpd.GeoDataFrame(
        {
            "kind": ["cloud", "cloud_shadow", "drone_footprint"],
            "epoch": [EPOCHS[1][0], EPOCHS[1][0], None],
        },
        geometry=[*clouds, world(town.footprint)],
        crs=_GRID_CRS,
    )
    truth = {"truth": frame(plans[0].truth, fields), "nuisance": nuisance}
    for q, plan in enumerate(plans[1:], start=1):
        truth[_truth_layer(q)] = frame(plan.truth, [*fields, "case", "prior"])
    permits = frame(_concat(*(plan.permits for plan in plans)), ["permit_id"])
    _write_gpkg(root / "truth.gpkg", truth)
    _write_gpkg(root / "permits.gpkg", {"permits": permits})
    _write_gpkg(root / "offices.gpkg", {"offices": _offices(town, rng)})


def _offices(town: _Town, rng) -> gpd.GeoDataFrame:
    """Three street offices tiling the area and a margin around it, EPSG:4490.

    A wavy north-south line splits off the west office; a wavy east-west line splits the rest.
    """
    extent = town.size * _RES
    left, top = _ORIGIN
    margin = max(300.0, 0.15 * extent)
    x_lo, y_lo = left - margin, top - extent - margin
    x_hi, y_hi = left + extent + margin, top + margin
    t = np.linspace(0.0, 1.0, 60)

    def wave() -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, 2)
        return (
            0.04
            * extent
            * (np.sin(3 * np.pi * t + phase[0]) + 0.5 * np.sin(7 * np.pi * t + phase[1]))
        )

    split = np.stack([left + 0.38 * extent + wave(), y_lo + t * (y_hi - y_lo)], -1)
    west = shapely.Polygon([(x_lo, y_lo), *split, (x_lo, y_hi)])
    split = np.stack([x_lo + t * (x_hi - x_lo), top - 0.55 * extent + wave()], -1)
    north = shapely.Polygon([(x_lo, y_hi), *split, (x_hi, y_hi)])
    box = shapely.box(x_lo, y_lo, x_hi, y_hi)
    east = box.difference(west)
    shapes = [box.intersection(west), east.intersection(north), east.difference(north)]
    return gpd.GeoDataFrame(
        {"code": [c for c, _ in OFFICES], "name": [n for _, n in OFFICES]},
        geometry=shapes,
        crs=_GRID_CRS,
    ).to_crs(_OFFICE_CRS)


def _config(epochs, *, quarter: int) -> dict:
    """The batch configuration of quarter `quarter` (from 0) over `epochs` ((id, date) pairs),
    DESIGN's contract; paths relative to the file."""
    return {
        "grid": {"crs": _GRID_CRS, "resolution": _RES, "tile_size": _TILE, "halo": 64},
        "paths": {"work": "work", "out": "out", "register": "register.gpkg"},
        "offices": {"path": "offices.gpkg", "code_field": "code", "name_field": "name"},
        "permits": {"path": "permits.gpkg", "id_field": "permit_id"},
        "epochs": [
            {
                "id": epoch,
                "date": date,
                "sources": [
                    {
                        "kind": "satellite",
                        "path": f"imagery/sat_{epoch}_*.tif",
                        "bands": {"blue": 1, "green": 2, "red": 3, "nir": 4},
                    },
                    {
                        "kind": "drone",
                        "path": f"imagery/drone_{epoch}.tif",
                        "bands": {"red": 1, "green": 2, "blue": 3},
                    },
                    {"kind": "dsm", "path": f"imagery/dsm_{epoch}.tif"},
                ],
            }
            for epoch, date in epochs
        ],
        "run": {"before": epochs[quarter][0], "after": epochs[quarter + 1][0]},
        "detect": {"min_area_m2": 20},
    }


def _toml(doc: dict) -> str:
    """TOML text for `doc`: its dicts become tables, lists of dicts arrays of tables, and dicts
    inside a table inline tables. Top-level plain values come first, as TOML requires."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items() if not _is_table(v)]
    for key, value in doc.items():
        for table in [value] if isinstance(value, dict) else value if _is_table(value) else []:
            _toml_table(_toml_key(key), table, lines, array=not isinstance(value, dict))
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_table(name: str, table: dict, lines: list[str], *, array: bool) -> None:
    lines += ["", f"[[{name}]]" if array else f"[{name}]"]
    nested = {k: v for k, v in table.items() if _is_table_array(v)}
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if k not in nested]
    for key, items in nested.items():
        for item in items:
            _toml_table(f"{name}.{_toml_key(key)}", item, lines, array=True)


def _is_table(value) -> bool:
    return isinstance(value, dict) or _is_table_array(value)


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} to TOML")
