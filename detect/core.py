"""Change detection on one tile: two scenes and an Affine in, change objects out.

:func:`detect_changes` validates the scenes, pairs and co-registers their layers, normalises the
later epoch, computes and fuses the cues, segments the score and describes each object that the
tile owns. :func:`change_mask` runs the same steps on a plain image pair and returns the mask of
the objects kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from scipy import ndimage as ndi

from errors import InputError

from .cues import Cues, compute_cues, tile_levels
from .cues import _shrink as shrink
from .focus import focus_windows, spills
from .objects import classify, hysteresis, object_stats, outline, polygons, segment
from .pairs import Pair, prepare_pairs
from .params import DetectParams
from .scene import Scene, check_pair, compared_box, crop, layers

__all__ = ["TileResult", "change_mask", "cue_maps", "detect_changes"]

#: Statistics holding each object's bounding box on the tile (first row, end row, first
#: column, end column), when its windows give it.
_BOX = ("box_top", "box_bottom", "box_left", "box_right")
#: Per-object cue means carried into the result: statistic name -> column name.
_CUE_COLUMNS = {
    "spectral": "spectral_z",
    "structure": "structure_change",
    "vegetation_before": "vegetation_before",
    "vegetation_after": "vegetation_after",
    "water": "water_share",
}
#: Pixels kept around the box both epochs cover when a tile is cut to it (see
#: :func:`compared`): more than any filter reaches, and the box's edges stay on multiples of
#: it, so that the tile's sampling grids (steps of 2, 4, 8 ... px) keep their pixels.
_BOX_MARGIN = 64


@dataclass(frozen=True, eq=False)
class TileResult:
    """The change objects a tile owns, as columns, and the tile's QA.

    Attributes
    ----------
    geometry : list of shapely.Polygon, length k
        Outlines in the CRS of the transform.
    area_m2 : ndarray of float64, shape (k,)
        Pixel area of each object, m².
    score : ndarray of float64, shape (k,)
        Mean fused score over the object, 0..1.
    change_type : ndarray of str (object), shape (k,)
        One of :data:`detect.CHANGE_TYPES`.
    height_gain_m : ndarray of float64, shape (k,)
        Mean height change (negative = loss), m; NaN unless DSMs of both epochs cover most of
        the object.
    x, y : ndarray of float64, shape (k,)
        Centroid in CRS coordinates.
    cues : dict of str to ndarray of float64, shape (k,)
        Per-object cue means: ``spectral_z``, ``structure_change``, ``vegetation_before``,
        ``vegetation_after`` (vegetated shares), ``water_share`` (share of a ring around it on
        open water in both epochs: a change ringed by water lies in water).
    cloud : shapely.MultiPolygon
        Where cloud, haze or a cloud shadow kept the whole haloed tile from being compared
        (empty if nowhere), in the CRS of the transform; the batch joins these over tiles, so
        that a suspect one tile's halo saw too little of a cloud to recognise is still known
        to lie in a neighbour's cloud.
    qa : dict of str to float, bool or str
        ``compared`` (layer pairs compared, comma separated), ``valid_fraction`` (share of the
        tile compared), ``cloud_fraction`` (share of the pixels valid in both epochs that
        cloud, haze or a cloud shadow in either epoch kept from being compared), ``shift_row_px``, ``shift_col_px``, ``shift_confidence`` and
        ``shift_applied`` of the most confident pair, and the same four prefixed with each
        pair's kind (e.g. ``drone_shift_row_px``).
    """

    geometry: list[shapely.Polygon]
    area_m2: np.ndarray
    score: np.ndarray
    change_type: np.ndarray
    height_gain_m: np.ndarray
    x: np.ndarray
    y: np.ndarray
    cues: dict[str, np.ndarray]
    qa: dict[str, Any]
    cloud: shapely.MultiPolygon = shapely.MultiPolygon()

    def __len__(self) -> int:
        return len(self.geometry)

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per object: ``geometry``, ``change_type``, ``area_m2``, ``height_gain_m``,
        ``score``, ``x``, ``y`` and the cue columns; ready for ``geopandas.GeoDataFrame``."""
        columns = {
            "change_type": self.change_type,
            "area_m2": self.area_m2,
            "height_gain_m": self.height_gain_m,
            "score": self.score,
            "x": self.x,
            "y": self.y,
            **self.cues,
        }
        return [
            {"geometry": geom, **{k: _plain(v[i]) for k, v in columns.items()}}
            for i, geom in enumerate(self.geometry)
        ]


def detect_changes(
    before: Scene,
    after: Scene,
    *,
    transform: Affine,
    params: DetectParams = DetectParams(),
    core: tuple[slice, slice] | None = None,
) -> TileResult:
    """Find the changes between two epochs of one (haloed) tile.

    Parameters
    ----------
    before, after : Scene
        The two epochs on the same grid; any mix of satellite, drone and DSM layers.
    transform : Affine, keyword-only
        Pixel to CRS transform of the haloed tile (north-up; pixel size in metres).
    params : DetectParams, keyword-only
    core : tuple of slice, keyword-only
        (rows, cols) of the tile proper inside the haloed arrays. An object is returned only if
        its centroid lies in the core, so an object crossing a tile edge belongs to exactly one
        tile. None keeps every object.

    Returns
    -------
    TileResult

    Raises
    ------
    errors.InputError
        Malformed scenes, epochs of different shapes or a degenerate transform.
    """
    shape = check_pair(before, after)
    before, after, transform, core = compared(before, after, transform=transform, core=core)
    labels, keep, stats, coverage, pairs = _detect(before, after, transform, params, core)
    valid, cloud = coverage
    return objects_result(
        labels,
        keep,
        stats,
        cloud=cloud,
        transform=transform,
        params=params,
        qa=_qa(pairs, valid, cloud, size=shape[0] * shape[1]),
    )


def compared(
    before: Scene,
    after: Scene,
    *,
    transform: Affine,
    core: tuple[slice, slice] | None,
) -> tuple[Scene, Scene, Affine, tuple[slice, slice] | None]:
    """Two checked epochs of a tile cut to the box where both have data (with a margin), and
    the transform and core of the cut: a tile that the epochs cover only in part (the edge of
    a quarter, a drone flight's patch) costs no more than the part. Unchanged when the box is
    the whole tile or empty.
    """
    shape = check_pair(before, after)
    box = compared_box(before, after, margin=_BOX_MARGIN, align=_BOX_MARGIN)
    if box is None or all(b.stop - b.start == n for b, n in zip(box, shape, strict=True)):
        return before, after, transform, core
    rows, cols = box
    if core is not None:
        core = tuple(
            slice(max(r.start - b.start, 0), max(r.stop - b.start, 0))
            for r, b in (
                (range(*s.indices(n)), b) for s, b, n in zip(core, box, shape, strict=True)
            )
        )
    transform = transform @ Affine.translation(cols.start, rows.start)
    return crop(before, box), crop(after, box), transform, core


def objects_result(
    labels: np.ndarray,
    keep: np.ndarray,
    stats: dict[str, np.ndarray],
    *,
    cloud: np.ndarray,
    transform: Affine,
    params: DetectParams,
    qa: dict[str, Any],
) -> TileResult:
    """Assemble the :class:`TileResult` of the kept objects of a labelled tile.

    Parameters
    ----------
    labels : ndarray of int32, shape (h, w)
        Object labels (0 = none).
    keep : ndarray of int
        1-based ids of the objects to report (see :func:`kept_objects`).
    stats : dict of ndarray
        Per-object statistics from :func:`detect.objects.object_stats`, indexed by id - 1.
    cloud : ndarray of bool, shape (h, w), keyword-only
        The tile's cloud mask (:attr:`Cues.cloud`), outlined into ``TileResult.cloud``.
    transform : Affine, keyword-only
        Pixel to CRS transform of the tile.
    params : DetectParams, keyword-only
    qa : dict, keyword-only
        The tile's QA figures, passed through.
    """
    pixel_area = abs(transform.determinant)
    kept = {name: values[keep - 1] for name, values in stats.items()}
    xs, ys = transform @ (kept["col"], kept["row"])
    covered = kept["height_cover"] >= 0.5
    boxes = np.stack([kept[name] for name in _BOX], axis=1) if _BOX[0] in kept else None
    return TileResult(
        geometry=polygons(labels, keep, transform=transform, boxes=boxes),
        area_m2=kept["pixels"] * pixel_area,
        score=kept["score"],
        change_type=classify(kept, params=params),
        height_gain_m=np.where(covered, kept["height_change"], np.nan),
        x=np.asarray(xs, np.float64),
        y=np.asarray(ys, np.float64),
        cues={column: kept[name] for name, column in _CUE_COLUMNS.items()},
        qa=qa,
        cloud=outline(cloud, transform=transform),
    )


def kept_objects(
    labels: np.ndarray,
    n: int,
    cues: Cues,
    *,
    pixel_size: float,
    params: DetectParams,
    core: tuple[slice, slice] | None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-object statistics and the 1-based ids of the objects that are large enough and,
    when ``core`` is given, whose centroid lies in the core (the ownership rule)."""
    stats = object_stats(labels, n, cues, pixel_size=pixel_size)
    return _kept(stats, labels.shape, pixel_size=pixel_size, params=params, core=core), stats


def _kept(
    stats: dict[str, np.ndarray],
    shape: tuple[int, int],
    *,
    pixel_size: float,
    params: DetectParams,
    core: tuple[slice, slice] | None,
) -> np.ndarray:
    keep = stats["pixels"] * pixel_size**2 >= params.min_area_m2
    if core is not None:
        rows, cols = (range(*s.indices(size)) for s, size in zip(core, shape, strict=True))
        keep &= (stats["row"] >= rows.start) & (stats["row"] < rows.stop)
        keep &= (stats["col"] >= cols.start) & (stats["col"] < cols.stop)
    return np.flatnonzero(keep) + 1


def change_mask(
    before: Scene,
    after: Scene,
    *,
    pixel_size: float = 0.5,
    params: DetectParams = DetectParams(),
) -> np.ndarray:
    """The pixels of the change objects :func:`detect_changes` would report, as a mask.

    For plain (not georeferenced) image pairs, e.g. ``Scene(satellite=rgb, satellite_bands=
    ("red", "green", "blue"))`` from two PNGs.

    Parameters
    ----------
    before, after : Scene
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only

    Returns
    -------
    ndarray of bool, shape (h, w)
    """
    if not pixel_size > 0:
        raise InputError(
            f"pixel size {pixel_size} is not positive; give metres per pixel, e.g. 0.5"
        )
    shape = check_pair(before, after)
    transform = Affine(pixel_size, 0.0, 0.0, 0.0, -pixel_size, 0.0)
    box = compared_box(before, after, margin=_BOX_MARGIN, align=_BOX_MARGIN)
    mask = np.zeros(shape, bool)
    if box is None:
        return mask
    labels, keep, _, _, _ = _detect(crop(before, box), crop(after, box), transform, params, None)
    mask[box] = np.isin(labels, keep)
    return mask


def cue_maps(
    before: Scene,
    after: Scene,
    *,
    pixel_size: float = 0.5,
    params: DetectParams = DetectParams(),
) -> Cues:
    """The per-pixel cues and fused score :func:`detect_changes` segments, for inspection or as
    features of a learned model.

    Parameters
    ----------
    before, after : Scene
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only

    Returns
    -------
    Cues
        Every map (h, w), on the before epoch's grid.
    """
    shape = check_pair(before, after)
    pixel_size = _pixel_size(Affine(pixel_size, 0.0, 0.0, 0.0, -pixel_size, 0.0))
    pairs = prepare_pairs(layers(before), layers(after), pixel_size=pixel_size, params=params)
    return compute_cues(pairs, shape, pixel_size=pixel_size, params=params)


def _detect(
    before: Scene,
    after: Scene,
    transform: Affine,
    params: DetectParams,
    core: tuple[slice, slice] | None,
) -> tuple[
    np.ndarray, np.ndarray, dict[str, np.ndarray], tuple[np.ndarray, np.ndarray], list[Pair]
]:
    """Validate -> pair -> tile levels -> windows -> (cues -> segment -> statistics) per window.

    Returns the labels, the ids (1-based) of the kept objects, their statistics, the tile's
    (compared, cloud) masks and its pairs.
    """
    shape = check_pair(before, after)
    pixel_size = _pixel_size(transform)
    pairs = prepare_pairs(layers(before), layers(after), pixel_size=pixel_size, params=params)
    levels = tile_levels(pairs, pixel_size=pixel_size, params=params)
    coverage = _coverage(pairs, shape, pixel_size, params)
    whole = (slice(0, shape[0]), slice(0, shape[1]))
    if not coverage[0].any():
        windows = []
    elif params.focus:
        windows = focus_windows(pairs, levels, shape, pixel_size=pixel_size, params=params)
    else:
        windows = [whole]
    labels = np.zeros(shape, np.int32)
    parts: list[dict[str, np.ndarray]] = []
    labelled: list[tuple[slice, slice]] = []  # the windows that hold objects
    while windows:
        window = windows.pop(0)
        cues = compute_cues(
            pairs, shape, pixel_size=pixel_size, params=params, levels=levels, window=window
        )
        if not cues.valid.any():
            continue
        regions = hysteresis(cues.score, params=params)
        if spills(regions, window, shape, pixel_size=pixel_size, params=params):
            # A region of the score runs out of the window: compare the whole tile instead.
            labels[:], parts, labelled, windows = 0, [], [], [whole]
            continue
        part, n = segment(
            cues.score,
            cues.strength,
            cues.valid,
            pixel_size=pixel_size,
            params=params,
            regions=regions,
        )
        if n == 0:
            continue
        stats = object_stats(part, n, cues, pixel_size=pixel_size)
        found = np.array(
            [(r.start, r.stop, c.start, c.stop) for r, c in ndi.find_objects(part)]
        ) + np.repeat([window[0].start, window[1].start], 2)
        stats.update(zip(_BOX, found.T, strict=True))
        rows, cols = np.divmod(np.unique(part.ravel(), return_index=True)[1][1:], part.shape[1])
        stats["first"] = (rows + window[0].start) * shape[1] + cols + window[1].start
        stats["row"] += window[0].start
        stats["col"] += window[1].start
        labels[window] = np.where(part > 0, part + sum(p["pixels"].size for p in parts), 0)
        parts.append(stats)
        labelled.append(window)
    if not parts:  # the statistics of no object
        nothing = compute_cues([], (1, 1), pixel_size=pixel_size, params=params)
        parts.append(object_stats(np.zeros((1, 1), np.int32), 0, nothing, pixel_size=pixel_size))
        parts[0]["first"] = np.zeros(0, np.int64)
    stats = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    # Number the objects in raster order of their first pixel, as one labelling of the
    # whole tile would.
    order = np.argsort(stats.pop("first"), kind="stable")
    stats = {name: values[order] for name, values in stats.items()}
    relabel = np.zeros(order.size + 1, np.int32)
    relabel[order + 1] = np.arange(1, order.size + 1, dtype=np.int32)
    for window in labelled:  # the windows are disjoint; no object lies outside them
        labels[window] = relabel[labels[window]]
    keep = _kept(stats, shape, pixel_size=pixel_size, params=params, core=core)
    return labels, keep, stats, coverage, pairs


def _coverage(
    pairs: list[Pair], shape: tuple[int, int], pixel_size: float, params: DetectParams
) -> tuple[np.ndarray, np.ndarray]:
    """The pixels :func:`compute_cues` compares (:attr:`Cues.valid`) and its cloud mask
    (:attr:`Cues.cloud`), for the whole tile."""
    valid, cloud = np.zeros(shape, bool), np.zeros(shape, bool)
    reach = int(np.ceil(2 * params.smooth_m / pixel_size)) + 1
    for pair in pairs:
        valid |= shrink(pair.valid, reach)
        cloud |= pair.cloud
    return valid, cloud


def _pixel_size(transform: Affine) -> float:
    size = float(np.sqrt(abs(transform.determinant)))
    if not np.isfinite(size) or size <= 0:
        raise InputError(
            f"transform {tuple(transform)[:6]} has no pixel area; give the tile's Affine"
        )
    return size


def coverage_qa(
    valid: np.ndarray, cloud: np.ndarray, *, size: int | None = None
) -> dict[str, float]:
    """``valid_fraction`` (share of the tile compared) and ``cloud_fraction`` (share of the
    pixels valid in both epochs that cloud kept from being compared) of a tile; ``size``: the
    tile's pixels, when the masks cover only a part of it (see :func:`compared`)."""
    size = valid.size if size is None else size
    return {
        "valid_fraction": int(valid.sum()) / size if size else 0.0,
        "cloud_fraction": float(cloud.sum() / max(int((valid | cloud).sum()), 1)),
    }


def _qa(pairs: list[Pair], valid: np.ndarray, cloud: np.ndarray, *, size: int) -> dict[str, Any]:
    qa: dict[str, Any] = {
        "compared": ",".join(p.kind for p in pairs),
        **coverage_qa(valid, cloud, size=size),
    }
    best = max(pairs, key=lambda p: p.shift.confidence, default=None)
    for prefix, pair in [("", best)] + [(f"{p.kind}_", p) for p in pairs]:
        if pair is None:
            continue
        qa[f"{prefix}shift_row_px"] = pair.shift.row
        qa[f"{prefix}shift_col_px"] = pair.shift.col
        qa[f"{prefix}shift_confidence"] = pair.shift.confidence
        qa[f"{prefix}shift_applied"] = pair.shift.applied
    return qa


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars (strings stay strings)."""
    return value.item() if isinstance(value, np.generic) else value
