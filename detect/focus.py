"""Where a tile can hold change: a cheap screen that spares the cues most of a quiet tile.

Most of a quarter's ground does not change. Before the cues are computed,
:func:`focus_windows` bounds the fused score (:func:`detect.cues.compute_cues`) from above on
every pixel, from what is cheap to compute for the whole tile:

* colour: the colour change in the tile's noise units (:class:`detect.cues.Levels`), bounded
  from above by smoothing the sum of the squared band changes (one array per pair, not both
  epochs' layers; the square of a weighted mean is at most the weighted mean of the squares),
  with structure at its most (``EDGE_GAIN`` times); none where
  the pixel is vegetated in both epochs or water in both, where colour counts for nothing.
  Those indices are linear inequalities in the bands, so they hold after smoothing wherever
  they hold all around: they are taken on the unsmoothed bands and shrunk by the smoothing
  radius;
* height: the smoothed DSM change.

Objects grow from the pixels whose score passes ``score_low`` (the *candidates*), and survive
the opening only if they hold a disk of ``open_m``, so only the 4-connected parts of the
candidates that hold the square inscribed in that disk can give objects. Each such part, with
a margin wider than every filter of the cues and of segmentation, makes a window; overlapping
windows are joined. The cues of a window are the tile's own (they are computed with the whole
tile's :class:`detect.cues.Levels`), so its objects are those the whole tile would give.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .cues import EDGE_GAIN, Levels, _noisy_or, _smooth, _smooth_radius
from .indices import vegetated, water
from .pairs import Pair
from .params import DetectParams

__all__ = ["focus_windows", "spills"]

#: Margin (m) around candidate change: smoothing, structure window, opening and closing,
#: the ring of object statistics, with room to spare.
_MARGIN_M = 8.0
#: Smallest margin (px).
_MARGIN_PX = 16
#: Thresholds are loosened by this factor against rounding (the cues smooth each epoch, the
#: screen their difference).
_LOOSE = 0.99
#: Windows covering more than this share of the tile are replaced by the whole tile.
_WHOLE = 0.5
#: Side (px) of the cells the candidates' parts are found on.
_CELL = 4

Window = tuple[slice, slice]


def focus_windows(
    pairs: list[Pair],
    levels: list[Levels],
    shape: tuple[int, int],
    *,
    pixel_size: float,
    params: DetectParams,
) -> list[Window]:
    """Disjoint windows of the tile that hold every pixel where change can be found.

    Parameters
    ----------
    pairs : list of Pair
    levels : list of Levels
        The pairs' :func:`detect.cues.tile_levels`.
    shape : tuple of int
        Tile shape (h, w).
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only

    Returns
    -------
    list of (slice, slice)
        Empty when nothing can change; the whole tile when the windows would cover most of it.
    """
    sigma = params.smooth_m / pixel_size
    radius = _smooth_radius(sigma)
    low = _LOOSE * params.score_low
    colour = np.zeros(shape, np.float32)
    rise: np.ndarray | None = None  # only with a DSM pair
    height = any(pair.kind == "dsm" for pair in pairs)
    # Without a DSM pair the score is the ramp of the colour alone. A pixel is a candidate
    # where its colour passes the colour the ramp takes to score_low: where its smoothed
    # squared change passes that colour squared times the band count (no root, ramp or score).
    floor = params.spectral_z[0] / params.spectral_z[1]
    lowest_colour = (floor + low * (1.0 - floor)) * params.spectral_z[1] / EDGE_GAIN
    passing = np.zeros(shape, bool)
    quiet = np.zeros(shape, bool)
    vegetation: list[tuple[np.ndarray, str]] = []
    for pair, level in zip(pairs, levels, strict=True):
        if pair.kind == "dsm":
            change = _smoothed_change(pair, 0, sigma)
            rising = np.where(pair.valid, np.abs(np.nan_to_num(change)), np.float32(0.0))
            rising /= np.float32(params.height_change_m[1])
            rise = rising if rise is None else np.maximum(rise, rising)
            continue
        z2 = _smooth(_squared_change(pair, level.noise)[np.newaxis], sigma)[0]
        if height:
            z = np.where(pair.valid, np.sqrt(z2 / len(pair.bands)), np.float32(0.0))
            colour = np.maximum(colour, z)  # the cues average the pairs: at most the largest
        else:
            passing |= pair.valid & (z2 > np.float32(len(pair.bands) * lowest_colour**2))
        # Water and vegetation in both epochs: the later epoch is looked at only where the
        # earlier one has some.
        wet = water(pair.before, pair.bands)
        if wet is not None and wet.any():
            quiet |= _eroded(wet & water(pair.after, pair.bands), radius)
        found = vegetated(pair.before, pair.bands, params=params)
        if found is not None:
            both, name = found
            if both.any():
                both &= vegetated(pair.after, pair.bands, params=params)[0]
            vegetation.append((both, name))
    if vegetation:  # the cues take vegetation from NDVI when a pair has it
        quiet |= _eroded(sorted(vegetation, key=lambda v: v[1] != "ndvi")[0][0], radius)
    if rise is None:
        candidate = passing & ~quiet
    else:
        optical = np.where(
            quiet, np.float32(0.0), colour * np.float32(EDGE_GAIN / params.spectral_z[1])
        )
        candidate = _noisy_or(rise, optical, params) > low
    # An object survives the opening only if it holds a disk of open_m, so it holds the
    # square inscribed in that disk: only parts of the candidates holding one can be objects.
    # Each window takes all of such a part (4-connected, as the hysteresis regions are), so
    # that the region of the score an object grows from lies in one window.
    seeds = _seeds(candidate, pixel_size, params)
    if not seeds.any():
        return []
    # The parts are found on cells of _CELL² pixels (a cell is a candidate where any of its
    # pixels is): a 4-connected part of the pixels lies within one 4-connected part of the
    # cells, so each window still holds all of its part, for a sixteenth of the labelling.
    parts, _ = ndi.label(_cells(candidate))
    margin = max(_MARGIN_PX, int(np.ceil(_MARGIN_M / pixel_size)))
    found = ndi.find_objects(parts)
    boxes = [
        (
            max(found[i - 1][0].start * _CELL - margin, 0),
            min(found[i - 1][0].stop * _CELL + margin, shape[0]),
            max(found[i - 1][1].start * _CELL - margin, 0),
            min(found[i - 1][1].stop * _CELL + margin, shape[1]),
        )
        for i in np.unique(parts[_cells(seeds)])
    ]
    boxes = _merged(boxes)
    if sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes) > _WHOLE * shape[0] * shape[1]:
        return [(slice(0, shape[0]), slice(0, shape[1]))]
    return [(slice(r0, r1), slice(c0, c1)) for r0, r1, c0, c1 in boxes]


def _smoothed_change(pair: Pair, band: int, sigma: float) -> np.ndarray:
    """One band's smoothed after minus smoothed before (the smoothing of their difference),
    float32 (h, w); a band at a time keeps the arrays small."""
    return _smooth((pair.after[band] - pair.before[band])[np.newaxis], sigma)[0]


def _squared_change(pair: Pair, noise: np.ndarray) -> np.ndarray:
    """Sum over bands of the squared change in units of each band's noise, float32 (h, w).

    Smoothed, it bounds the sum of the squared smoothed changes the cues see from above (the
    square of a weighted mean is at most the weighted mean of the squares), with one array to
    smooth instead of one per band.
    """
    out = np.zeros(pair.before.shape[1:], np.float32)
    for after, before, scale in zip(pair.after, pair.before, noise, strict=True):
        change = after - before
        change *= np.float32(1.0 / scale)
        change *= change
        out += change
    return out


def spills(
    regions: np.ndarray,
    window: Window,
    shape: tuple[int, int],
    *,
    pixel_size: float,
    params: DetectParams,
) -> bool:
    """Whether a region of the score that can hold an object runs out of its window.

    ``regions`` are the hysteresis regions of a window's score (see
    :func:`detect.objects.hysteresis`). A region touching an edge of the window inside the tile
    may go on beyond it; only a region that holds the square an object needs can matter (the
    cues of a window differ from the tile's within a pixel or two of its edge, and specks of
    noise straddle any edge).
    """
    rows, cols = window
    edge = np.zeros(regions.shape, bool)
    edge[0, :] |= rows.start > 0
    edge[-1, :] |= rows.stop < shape[0]
    edge[:, 0] |= cols.start > 0
    edge[:, -1] |= cols.stop < shape[1]
    if not (regions & edge).any():
        return False
    parts, _ = ndi.label(regions)
    touching = np.unique(parts[regions & edge])
    return bool(np.isin(parts[_seeds(regions, pixel_size, params)], touching).any())


def _cells(mask: np.ndarray) -> np.ndarray:
    """Whether any pixel of each ``_CELL`` x ``_CELL`` cell of ``mask`` is set (the last
    row and column of cells may be cut short by the tile's edge)."""
    h, w = mask.shape
    padded = np.zeros((-(-h // _CELL) * _CELL, -(-w // _CELL) * _CELL), bool)
    padded[:h, :w] = mask
    rows = padded[0::_CELL].copy()
    for i in range(1, _CELL):
        rows |= padded[i::_CELL]
    out = rows[:, 0::_CELL].copy()
    for j in range(1, _CELL):
        out |= rows[:, j::_CELL]
    return out


def _seeds(candidate: np.ndarray, pixel_size: float, params: DetectParams) -> np.ndarray:
    """Centres of the squares inscribed in the opening's disk that fit in ``candidate``."""
    inscribed = int(int(round(params.open_m / pixel_size)) / np.sqrt(2.0))
    return _square(candidate, inscribed, np.logical_and, True) if inscribed else candidate


def _eroded(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose every neighbour within ``radius`` (square; beyond the tile counts as in
    ``mask``) is in ``mask``: the band indices are linear inequalities, so smoothing keeps
    them true there."""
    if not radius or not mask.any() or mask.all():
        return mask
    return _square(mask, radius, np.logical_and, True)


def _square(mask: np.ndarray, radius: int, combine, outside: bool) -> np.ndarray:
    """``combine`` of ``mask`` over a (2 radius + 1)² square around each pixel, one axis at a
    time, pixels beyond the edge taken as ``outside``."""
    out = mask
    for axis in (0, 1):
        size = out.shape[axis]
        padded = np.full(
            tuple(n + 2 * radius if a == axis else n for a, n in enumerate(out.shape)), outside
        )
        inner = [slice(None)] * 2
        inner[axis] = slice(radius, radius + size)
        padded[tuple(inner)] = out
        result = out.copy()
        for shift in range(2 * radius + 1):
            view = [slice(None)] * 2
            view[axis] = slice(shift, shift + size)
            combine(result, padded[tuple(view)], out=result)
        out = result
    return out


def _merged(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Boxes (r0, r1, c0, c1), overlapping ones replaced by their union until none overlap."""
    boxes = sorted(boxes)
    merged = True
    while merged:
        merged = False
        out: list[tuple[int, int, int, int]] = []
        for box in boxes:
            for i, other in enumerate(out):
                if (
                    box[0] < other[1]
                    and other[0] < box[1]
                    and box[2] < other[3]
                    and other[2] < box[3]
                ):
                    out[i] = (
                        min(box[0], other[0]),
                        max(box[1], other[1]),
                        min(box[2], other[2]),
                        max(box[3], other[3]),
                    )
                    merged = True
                    break
            else:
                out.append(box)
        boxes = sorted(out)
    return boxes
