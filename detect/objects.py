"""From a score map to change objects: segmentation, per-object statistics, type and polygon.

Statistics are label reductions (:func:`numpy.bincount` over the label image), so the cost does
not grow with the number of objects; polygons are traced only for the objects that survive the
area and ownership filters, each on its own bounding box.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage as ndi
from skimage.filters import apply_hysteresis_threshold

from .cues import Cues
from .morphology import closing, fill_holes, opening
from .params import DetectParams

__all__ = [
    "CHANGE_TYPES",
    "ChangeType",
    "classify",
    "hysteresis",
    "object_stats",
    "outline",
    "polygons",
    "segment",
]

ChangeType = Literal["new_building", "extension", "demolition", "land_clearing", "other"]
CHANGE_TYPES: tuple[ChangeType, ...] = (
    "new_building",
    "extension",
    "demolition",
    "land_clearing",
    "other",
)

#: Share of an object's pixels that must carry a cue for the object to carry it.
_MAJORITY = 0.5
#: Height (m) above the object's own before-height that makes a neighbour an existing building.
_RAISED_M = 2.5
#: Share of the ring around an object that must be shadow (or an existing building) to count.
_RING_SHARE = 0.1
#: Width (m) of the ring around an object searched for shadows and existing buildings.
_RING_M = 1.0
#: Quantile of a region's strength taken as its peak when outlining it.
_PEAK_QUANTILE = 0.9
#: Polygon simplification tolerance, in pixels.
_SIMPLIFY_PX = 0.5


def segment(
    score: np.ndarray,
    strength: np.ndarray,
    valid: np.ndarray,
    *,
    pixel_size: float,
    params: DetectParams,
    regions: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Objects from a score map: hysteresis threshold, outline, opening, closing, hole filling.

    Objects never reach beyond the compared pixels ``valid`` (closing and hole filling could
    otherwise grow them into nodata).

    Each hysteresis region keeps the pixels whose strength reaches ``params.outline_share`` of
    its peak (the ``_PEAK_QUANTILE`` quantile of its strength), so a high-contrast change (a
    white car on asphalt) is outlined at its true size rather than where its blurred edge
    fades below the low threshold.

    Parameters
    ----------
    score : ndarray of float32, shape (h, w)
        Change score in [0, 1].
    strength : ndarray of float32, shape (h, w)
        Unclipped evidence (see :class:`detect.cues.Cues`).
    valid : ndarray of bool, shape (h, w)
        Pixels compared.
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only
    regions : ndarray of bool, shape (h, w), keyword-only
        :func:`hysteresis` of ``score``, when already taken.

    Returns
    -------
    labels : ndarray of int32, shape (h, w)
        0 for background, 1..n for the 4-connected objects (before any area filter).
    n : int
    """
    mask = hysteresis(score, params=params) if regions is None else regions.copy()
    regions, n = ndi.label(mask)
    if n == 0:
        return np.zeros(score.shape, np.int32), 0
    floor = params.outline_share * _region_quantile(regions, n, strength, _PEAK_QUANTILE)
    mask &= strength >= np.concatenate([[np.inf], floor]).astype(np.float32)[regions]
    open_px = int(round(params.open_m / pixel_size))
    close_px = int(round(params.close_m / pixel_size))
    if open_px:
        mask = opening(mask, open_px)
    if close_px:
        mask = closing(mask, close_px)
    mask = fill_holes(mask) & valid
    labels, n = ndi.label(mask)
    return labels.astype(np.int32), int(n)


def hysteresis(score: np.ndarray, *, params: DetectParams) -> np.ndarray:
    """Pixels above ``score_low`` connected to a pixel above ``score_high``, bool (h, w)."""
    return apply_hysteresis_threshold(score, params.score_low, params.score_high)


def object_stats(
    labels: np.ndarray, n: int, cues: Cues, *, pixel_size: float
) -> dict[str, np.ndarray]:
    """Per-object statistics by label reductions.

    Parameters
    ----------
    labels : ndarray of int, shape (h, w)
        Object labels 1..n, 0 for background.
    n : int
    cues : Cues
    pixel_size : float, keyword-only
        Metres per pixel.

    Returns
    -------
    dict of str to ndarray of float64, shape (n,)
        Over the object: ``pixels`` (count), ``row`` and ``col`` (centroid, pixel-centre
        coordinates), ``score``, ``spectral`` and ``structure`` (means),
        ``vegetation_before`` and ``vegetation_after`` (shares), ``height_cover`` (share with
        a height change), ``height_change`` (mean over covered pixels, m; NaN if none).
        Over a ring ``_RING_M`` wide around it: ``shadow_before`` and ``shadow_after``
        (shares in shadow in that epoch only), ``water`` (share on open water in both epochs)
        and ``raised_neighbours`` (share that stood
        ``_RAISED_M`` above the object before and still stands; NaN without DSMs).
    """
    at = np.flatnonzero(labels.ravel())
    ids = labels.ravel()[at]
    rows, cols = np.divmod(at, labels.shape[1])
    height = cues.height.ravel()[at]
    covered = np.isfinite(height)
    stats = {
        "pixels": np.bincount(ids, minlength=n + 1)[1:].astype(np.float64),
        "row": _mean(ids, n, rows + 0.5),
        "col": _mean(ids, n, cols + 0.5),
        "score": _mean(ids, n, cues.score.ravel()[at]),
        "spectral": _mean(ids, n, cues.spectral.ravel()[at]),
        "structure": _mean(ids, n, cues.structure.ravel()[at]),
        "vegetation_before": _mean(ids, n, cues.vegetation_before.ravel()[at]),
        "vegetation_after": _mean(ids, n, cues.vegetation_after.ravel()[at]),
        "height_cover": _mean(ids, n, covered),
        "height_change": _mean(ids, n, np.nan_to_num(height), where=covered),
    }
    width = 2 * max(1, int(round(_RING_M / pixel_size))) + 1
    grown = ndi.grey_dilation(labels, size=(width, width))
    ring = np.flatnonzero((labels.ravel() == 0) & (grown.ravel() > 0))
    ring_ids = grown.ravel()[ring]
    stats["shadow_before"] = _mean(ring_ids, n, cues.shadow_before.ravel()[ring])
    stats["shadow_after"] = _mean(ring_ids, n, cues.shadow_after.ravel()[ring])
    stats["water"] = _mean(ring_ids, n, cues.water.ravel()[ring])
    if np.isfinite(cues.height_before).any():
        own = np.nan_to_num(_mean(ids, n, np.nan_to_num(cues.height_before.ravel()[at])))
        before = cues.height_before.ravel()[ring]
        change = np.nan_to_num(cues.height.ravel()[ring], nan=np.inf)
        standing = (before - own[ring_ids - 1] >= _RAISED_M) & (np.abs(change) < _RAISED_M)
        stats["raised_neighbours"] = _mean(ring_ids, n, standing)
    else:
        stats["raised_neighbours"] = np.full(n, np.nan)
    return stats


def classify(stats: dict[str, np.ndarray], *, params: DetectParams) -> np.ndarray:
    """The change type of each object from its statistics.

    Where DSMs of both epochs cover the object, height decides: a gain makes a
    ``new_building``, or an ``extension`` when an existing building that still stands touches
    it; a loss makes a ``demolition`` (``land_clearing`` where vegetation stood). Without
    height, a new shadow cast next to the object makes a ``new_building``, a shadow gone from
    beside it a ``demolition``, and vegetation turned bare a ``land_clearing``. The rest is
    ``other``.

    Parameters
    ----------
    stats : dict of str to ndarray, shape (n,)
        From :func:`object_stats`.
    params : DetectParams, keyword-only

    Returns
    -------
    ndarray of str (object), shape (n,)
    """
    out = np.full(stats["pixels"].size, "other", dtype=object)
    dh = np.nan_to_num(stats["height_change"])
    has_height = stats["height_cover"] >= _MAJORITY
    veg_before = stats["vegetation_before"] >= _MAJORITY
    veg_after = stats["vegetation_after"] >= _MAJORITY
    rise = has_height & (dh >= params.height_change_m[0])
    fall = has_height & (dh <= -params.height_change_m[0])
    cast = ~has_height & (stats["shadow_after"] >= _RING_SHARE)
    lifted = ~has_height & (stats["shadow_before"] >= _RING_SHARE)
    attached = np.nan_to_num(stats["raised_neighbours"]) >= _RING_SHARE
    # Later rules override earlier ones: the most specific evidence last.
    out[veg_before & ~veg_after] = "land_clearing"
    out[lifted & ~cast] = "demolition"
    out[cast & ~lifted] = "new_building"
    out[fall] = np.where(veg_before[fall], "land_clearing", "demolition")
    out[rise] = np.where(attached[rise], "extension", "new_building")
    return out


def polygons(
    labels: np.ndarray,
    ids: np.ndarray,
    *,
    transform: Affine,
    boxes: np.ndarray | None = None,
) -> list[shapely.Polygon]:
    """Polygons (CRS coordinates) of the given objects, traced on their bounding boxes.

    Parameters
    ----------
    labels : ndarray of int32, shape (h, w)
        Object labels.
    ids : ndarray of int, shape (k,)
        Labels to trace.
    transform : Affine, keyword-only
        Pixel to CRS transform of ``labels``.
    boxes : ndarray of int, shape (k, 4), keyword-only
        Each object's bounding box (first row, end row, first column, end column), when
        known; else they are found by a pass over ``labels``.

    Returns
    -------
    list of shapely.Polygon
        One per id, simplified by half a pixel (topology kept).
    """
    if len(ids) == 0:
        return []
    if boxes is None:
        found = ndi.find_objects(labels)
        boxes = [found[i - 1] for i in ids]
    else:
        boxes = [(slice(r0, r1), slice(c0, c1)) for r0, r1, c0, c1 in np.asarray(boxes).tolist()]
    tolerance = _SIMPLIFY_PX * abs(transform.a)
    out = []
    for i, (rows, cols) in zip(ids, boxes, strict=True):
        inside = labels[rows, cols] == i
        box_transform = transform @ Affine.translation(cols.start, rows.start)
        parts = [
            shapely.geometry.shape(geom)
            for geom, _ in rasterio.features.shapes(
                inside.astype(np.uint8), mask=inside, transform=box_transform
            )
        ]
        polygon = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        out.append(polygon.simplify(tolerance, preserve_topology=True))
    return out


def outline(mask: np.ndarray, *, transform: Affine) -> shapely.MultiPolygon:
    """The pixels of ``mask`` as one MultiPolygon in CRS coordinates (empty if none),
    simplified by half a pixel (topology kept)."""
    if not mask.any():
        return shapely.MultiPolygon()
    parts = [
        shapely.geometry.shape(geom)
        for geom, _ in rasterio.features.shapes(
            mask.astype(np.uint8), mask=mask, transform=transform
        )
    ]
    merged = shapely.union_all(parts).simplify(
        _SIMPLIFY_PX * abs(transform.a), preserve_topology=True
    )
    polygons = shapely.get_parts(merged)
    return shapely.MultiPolygon([p for p in polygons if isinstance(p, shapely.Polygon)])


def _region_quantile(regions: np.ndarray, n: int, values: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile (nearest rank) of ``values`` in each region 1..n, float64 (n,)."""
    at = np.flatnonzero(regions)
    ids, vals = regions.ravel()[at], values.ravel()[at]
    order = np.lexsort((vals, ids))
    counts = np.bincount(ids, minlength=n + 1)[1:]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = starts + np.minimum((q * counts).astype(np.int64), counts - 1)
    return vals[order][rank].astype(np.float64)


def _mean(
    ids: np.ndarray, n: int, values: np.ndarray, *, where: np.ndarray | None = None
) -> np.ndarray:
    """Mean of ``values`` per label 1..n (NaN for a label with no pixel), float64 (n,)."""
    weights = values.astype(np.float64)
    count = np.bincount(
        ids, weights=None if where is None else where.astype(np.float64), minlength=n + 1
    )[1:]
    if where is not None:
        weights = np.where(where, weights, 0.0)
    total = np.bincount(ids, weights=weights, minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count
