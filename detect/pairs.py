"""Pair the layers of two epochs, co-register them and normalise the later one onto the earlier.

Layers of the same kind are compared (satellite with satellite on their common bands, drone with
drone, DSM with DSM). When the epochs share no optical kind, a drone orthomosaic is compared with
a satellite image on their common colour bands; the radiometric fit bridges the two sensors.

Clouds, haze and cloud shadows are found here, on the normalised pair, and taken out of the
pixels compared and out of the radiometric fit, which is then redone without them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .align import Shift, apply_shift, measure_shift
from .indices import vegetated
from .nuisance import cloud_cells, clouds
from .params import DetectParams
from .radiometry import fit_gain_offset
from .scene import Layer, LayerKind

__all__ = ["Pair", "prepare_pairs"]

#: Rounds of finding clouds and refitting the radiometry without them (a cloud skews the
#: first fit, and a skewed fit hides the cloud's shadow).
_REFITS = 2


class Pair(NamedTuple):
    """One layer of each epoch on the same bands, the after epoch moved onto the before epoch.

    ``before`` and ``after`` are float32 (n, h, w) in the before epoch's units (DN, 0..255 or
    metres); ``valid`` (h, w) marks pixels valid in both epochs after the shift and clear of
    cloud; ``cloud`` (h, w) marks cloud, haze and cloud shadow in either epoch (see
    :func:`detect.nuisance.cloud_mask`; never for a DSM); ``gain`` and ``offset`` (n,) map the
    raw after values onto the before epoch (a DSM gets gain 1 and a vertical offset).
    """

    kind: str
    bands: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    cloud: np.ndarray
    shift: Shift
    gain: np.ndarray
    offset: np.ndarray


def prepare_pairs(
    before: dict[LayerKind, Layer],
    after: dict[LayerKind, Layer],
    *,
    pixel_size: float,
    params: DetectParams,
) -> list[Pair]:
    """Match, co-register and normalise the layers two epochs have in common.

    Parameters
    ----------
    before, after : dict of str to Layer
        The epochs' layers (see :func:`detect.scene.layers`).
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only

    Returns
    -------
    list of Pair
        Optical pairs first, the DSM pair (kind ``"dsm"``) last; empty when the epochs have
        nothing in common.
    """
    pairs = []
    for kind_b, kind_a, bands in _matches(before, after):
        b, a = before[kind_b], after[kind_a]
        pairs.append(
            _prepare(
                kind_b if kind_b == kind_a else f"{kind_b}-{kind_a}",
                bands,
                _select(b, bands),
                b.valid,
                _select(a, bands),
                a.valid,
                pixel_size=pixel_size,
                params=params,
            )
        )
    return pairs


def _matches(
    before: dict[LayerKind, Layer], after: dict[LayerKind, Layer]
) -> list[tuple[LayerKind, LayerKind, tuple[str, ...]]]:
    """(before kind, after kind, common bands) of the layer pairs to compare."""
    out: list[tuple[LayerKind, LayerKind, tuple[str, ...]]] = []
    for kind in ("satellite", "drone"):
        if kind in before and kind in after:
            bands = _common(before[kind].bands, after[kind].bands)
            if bands:
                out.append((kind, kind, bands))
    if not out:
        for kind_b, kind_a in (("drone", "satellite"), ("satellite", "drone")):
            if kind_b in before and kind_a in after:
                bands = _common(before[kind_b].bands, after[kind_a].bands)
                if bands:
                    out.append((kind_b, kind_a, bands))
                    break
    if "dsm" in before and "dsm" in after:
        out.append(("dsm", "dsm", ("height",)))
    return out


def _bare(
    bands: tuple[str, ...], params: DetectParams
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Which samples of two epochs (each (n, m)) are without vegetation in either epoch
    (vegetation changes with the season): all of them when fewer than a tenth are bare."""

    def usable(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        veg_before = vegetated(before, bands, params=params)
        veg_after = vegetated(after, bands, params=params)
        everything = np.ones(before.shape[1], bool)
        if veg_before is None or veg_after is None:
            return everything
        bare = ~veg_before[0] & ~veg_after[0]
        return bare if bare.sum() >= 0.1 * bare.size else everything

    return usable


def _select(layer: Layer, bands: tuple[str, ...]) -> np.ndarray:
    """The layer's data on ``bands``, in that order: the array itself when it holds just
    those (nothing downstream writes into a pair's input arrays), else a copy."""
    if layer.bands == bands:
        return layer.data
    return layer.data[[layer.bands.index(n) for n in bands]]


def _common(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in first if n in second)


def _prepare(
    kind: str,
    bands: tuple[str, ...],
    before: np.ndarray,
    valid_before: np.ndarray,
    after: np.ndarray,
    valid_after: np.ndarray,
    *,
    pixel_size: float,
    params: DetectParams,
) -> Pair:
    both = valid_before & valid_after
    shift = measure_shift(before, after, valid=both)
    max_shift_px = params.max_shift_m / pixel_size
    if shift.confidence >= params.min_shift_confidence and shift.magnitude <= max_shift_px:
        shift = Shift(shift.row, shift.col, shift.confidence, applied=True)
        after, valid_after = apply_shift(after, valid_after, shift)
        both = valid_before & valid_after
    cloud = np.zeros(both.shape, bool)
    if kind == "dsm":
        gain = np.ones(1)
        rise = (after[0] - before[0])[both]
        offset = -np.array([np.median(rise[::16])]) if rise.size else np.zeros(1)
        moved = _apply(after, gain, offset)
        return Pair(kind, bands, before, moved, both, cloud, shift, gain, offset)
    bare = _bare(bands, params)
    gain, offset = fit_gain_offset(before, after, both, usable=bare)
    cells = cloud_cells(before, after, both, pixel_size=pixel_size)
    for _ in range(_REFITS):
        cloud = clouds(
            cells._replace(after=_apply(cells.after, gain, offset)),
            bands=bands,
            kind=kind,
            shadow_ratio=params.shadow_ratio,
            cloud_min_area_m2=params.cloud_min_area_m2,
        )
        if not cloud.any():
            break
        gain, offset = fit_gain_offset(before, after, both & ~cloud, usable=bare)
    normalised = _apply(after, gain, offset)
    return Pair(kind, bands, before, normalised, both & ~cloud, cloud, shift, gain, offset)


def _apply(data: np.ndarray, gain: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``gain * data + offset`` per band, float32 (n, h, w).

    Each band is first centred on one of its own values (an exact float32 subtraction for
    nearby values), so a large offset cancelling a large value leaves no rounding error behind.
    """
    out = np.empty(data.shape, np.float32)
    for k, band in enumerate(data):
        centre = band.flat[0]
        np.subtract(band, centre, out=out[k])
        out[k] *= np.float32(gain[k])
        out[k] += np.float32(centre * gain[k] + offset[k])
    return out
