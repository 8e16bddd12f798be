"""Per-pixel evidence of change between two co-registered, normalised epochs, fused into a score.

Cues (all (h, w) maps on the tile):

* **spectral** - colour change after normalisation, in robust standard deviations of the
  tile's own differences, so it adapts to each sensor's noise;
* **structure** - change of local edge density: a new roof brings edges to bare ground, a
  demolished block takes them away; illumination changes leave it alone;
* **vegetation** - vegetated (NDVI with a near-infrared band, excess green with RGB only) in
  either epoch: vegetated in both is seasonal change, not construction;
* **height** - DSM difference, the strongest cue for new buildings where both epochs have one;
* **nuisance** - what must not become change: seasonal vegetation, water, cloud and haze
  (bright, colourless and smooth in one epoch only) and shadow (dark in one epoch only, with
  the colour of the ground kept).

:func:`compute_cues` fuses them into one score in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from .indices import vegetated, water
from .nuisance import Illumination, illumination_changes
from .pairs import Pair
from .params import DetectParams
from .radiometry import robust_scale

__all__ = ["Cues", "compute_cues", "ramp", "structure_change"]

#: Sampling step (px) for the robust statistics of a tile.
_STEP = 4
#: Window (m) over which edge density is averaged.
_STRUCTURE_WINDOW_M = 2.0


@dataclass(frozen=True, eq=False)
class Cues:
    """Evidence of change on one tile; every array is (h, w).

    Attributes
    ----------
    valid : ndarray of bool
        Pixels compared (valid in both epochs of at least one pair, away from nodata edges).
    spectral : ndarray of float32
        Colour change magnitude, robust standard deviations (0 where not compared).
    structure : ndarray of float32
        Edge density change in [-1, 1]: positive where the after epoch has more edges.
    vegetation_before, vegetation_after : ndarray of bool
        Vegetated pixels (all False without colour bands).
    height : ndarray of float32
        Height change after - before, metres; NaN without a DSM in both epochs.
    height_before : ndarray of float32
        Before-epoch height above the local ground, metres; NaN without DSMs.
    shadow_before, shadow_after : ndarray of bool
        Shadow in that epoch only (see :mod:`detect.nuisance`).
    cloud : ndarray of bool
        Cloud, haze or cloud shadow in either epoch.
    nuisance : ndarray of float32
        0..1: how surely an optical change is seasonal, water, cloud or shadow.
    score : ndarray of float32
        Fused change score in [0, 1].
    """

    valid: np.ndarray
    spectral: np.ndarray
    structure: np.ndarray
    vegetation_before: np.ndarray
    vegetation_after: np.ndarray
    height: np.ndarray
    height_before: np.ndarray
    shadow_before: np.ndarray
    shadow_after: np.ndarray
    cloud: np.ndarray
    nuisance: np.ndarray
    score: np.ndarray


def ramp(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values linearly onto 0..1 between ``low`` and ``high`` (clipped), float32."""
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def structure_change(before: np.ndarray, after: np.ndarray, *, window_px: int) -> np.ndarray:
    """Normalised change of local edge density between two single-band images.

    Parameters
    ----------
    before, after : ndarray of float32, shape (h, w)
        Brightness images in the same units.
    window_px : int, keyword-only
        Side of the square window the gradient magnitude is averaged over.

    Returns
    -------
    ndarray of float32, shape (h, w)
        ``(Ea - Eb) / (Ea + Eb + c)`` in (-1, 1), with ``E`` the local mean gradient magnitude
        and ``c`` the tile's median ``Eb`` (so faint texture on both sides stays near 0).
    """
    density = [
        ndi.uniform_filter(ndi.gaussian_gradient_magnitude(img, 1.0), window_px)
        for img in (before, after)
    ]
    c = float(np.median(density[0][::_STEP, ::_STEP])) + 1e-6
    return ((density[1] - density[0]) / (density[1] + density[0] + c)).astype(np.float32)


class _Optical(NamedTuple):
    """The cues of one optical pair; maps (h, w)."""

    valid: np.ndarray
    spectral: np.ndarray
    structure: np.ndarray
    vegetation: tuple[np.ndarray, np.ndarray, str] | None
    water: np.ndarray
    light: Illumination


def compute_cues(
    pairs: list[Pair], shape: tuple[int, int], *, pixel_size: float, params: DetectParams
) -> Cues:
    """Compute every cue of a tile and fuse them into a score.

    Optical pairs (satellite, drone) are averaged where several overlap; nuisances of any pair
    count; vegetation comes from the pair with NDVI when there is one.

    Parameters
    ----------
    pairs : list of Pair
        Co-registered, normalised layer pairs (see :func:`detect.pairs.prepare_pairs`).
    shape : tuple of int
        Tile shape (h, w).
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only

    Returns
    -------
    Cues
    """
    sigma = params.smooth_m / pixel_size
    height = np.full(shape, np.nan, np.float32)
    height_before = np.full(shape, np.nan, np.float32)
    optical = []
    for pair in pairs:
        valid = ndi.binary_erosion(pair.valid, iterations=int(np.ceil(2 * sigma)) + 1)
        before, after = _smooth(pair.before, sigma), _smooth(pair.after, sigma)
        if pair.kind == "dsm":
            height = np.where(valid, after[0] - before[0], np.nan).astype(np.float32)
            ground = _ground(before[0], pixel_size)
            height_before = np.where(valid, before[0] - ground, np.nan).astype(np.float32)
        else:
            optical.append(_optical(pair.kind, pair.bands, before, after, valid, pixel_size, params))
    count = np.zeros(shape, np.float32)
    spectral = np.zeros(shape, np.float32)
    structure = np.zeros(shape, np.float32)
    nuisance = np.zeros(shape, bool)
    shadow_before, shadow_after, cloud = (np.zeros(shape, bool) for _ in range(3))
    for o in optical:
        count += o.valid
        spectral += np.where(o.valid, o.spectral, 0.0)
        structure += np.where(o.valid, o.structure, 0.0)
        nuisance |= o.water
        shadow_before |= o.light.shadow_before
        shadow_after |= o.light.shadow_after
        cloud |= o.light.cloud
    with np.errstate(invalid="ignore", divide="ignore"):
        spectral = np.where(count > 0, spectral / count, 0.0).astype(np.float32)
        structure = np.where(count > 0, structure / count, 0.0).astype(np.float32)
    indexes = sorted((o.vegetation for o in optical if o.vegetation), key=lambda v: v[2] != "ndvi")
    veg_before, veg_after = indexes[0][:2] if indexes else (np.zeros(shape, bool),) * 2
    nuisance |= (veg_before & veg_after) | shadow_before | shadow_after | cloud
    valid = (count > 0) | np.isfinite(height)
    score = _fuse(spectral, structure, height, veg_after, nuisance, params)
    return Cues(
        valid=valid,
        spectral=spectral,
        structure=structure,
        vegetation_before=veg_before,
        vegetation_after=veg_after,
        height=height,
        height_before=height_before,
        shadow_before=shadow_before,
        shadow_after=shadow_after,
        cloud=cloud,
        nuisance=nuisance.astype(np.float32),
        score=np.where(valid, score, 0.0).astype(np.float32),
    )


def _optical(
    kind: str,
    bands: tuple[str, ...],
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    pixel_size: float,
    params: DetectParams,
) -> _Optical:
    """Spectral and structure change, vegetation, water and illumination of one pair."""
    vegetation = _vegetation(before, after, bands, params)
    seasonal = vegetation[0] & vegetation[1] if vegetation else np.zeros(valid.shape, bool)
    quiet = valid & ~seasonal
    z, spread = _spectral(before, after, quiet if quiet.sum() >= 0.1 * valid.sum() else valid)
    window = max(3, int(round(_STRUCTURE_WINDOW_M / pixel_size)) | 1)
    lum_before = np.tensordot(1.0 / spread, before, axes=1).astype(np.float32)
    lum_after = np.tensordot(1.0 / spread, after, axes=1).astype(np.float32)
    structure = structure_change(lum_before, lum_after, window_px=window)
    light = illumination_changes(
        before,
        after,
        valid,
        kind=kind,
        pixel_size=pixel_size,
        shadow_ratio=params.shadow_ratio,
        cloud_min_area_m2=params.cloud_min_area_m2,
    )
    water_both = _water(before, after, bands, valid)
    return _Optical(valid, z, structure, vegetation, water_both, light)


def _fuse(
    spectral: np.ndarray,
    structure: np.ndarray,
    height: np.ndarray,
    veg_after: np.ndarray,
    nuisance: np.ndarray,
    params: DetectParams,
) -> np.ndarray:
    """Noisy-OR of height evidence and nuisance-suppressed optical evidence."""
    optical = ramp(spectral, *params.spectral_z)
    optical = np.where(nuisance, 0.0, optical)
    dh = np.nan_to_num(height, nan=0.0)
    rise = ramp(np.abs(dh), *params.height_change_m)
    rise = np.where((dh > 0) & veg_after, 0.0, rise)
    return 1.0 - (1.0 - rise) * (1.0 - optical)


def _smooth(data: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return data
    return ndi.gaussian_filter(data, (0, sigma, sigma)).astype(np.float32)


def _spectral(
    before: np.ndarray, after: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Root-mean-square over bands of the difference in robust standard deviations.

    The noise of a band is the robust spread of its differences over ``valid``, but at least
    2 % of the band's own spread and 0.5 % of its bright level (so flat or mostly empty bands do
    not turn every speck into change). Returns the (h, w) magnitude and the (n,) robust spread
    of each before band (floored the same way), which weights the bands of the brightness image.
    """
    sample = valid[::_STEP, ::_STEP]
    z2 = np.zeros(before.shape[1:], np.float32)
    spread = np.empty(before.shape[0])
    for k, (b, a) in enumerate(zip(before, after, strict=True)):
        diff = a - b
        picked = b[::_STEP, ::_STEP][sample]
        level = float(np.percentile(np.abs(picked), 99)) if picked.size else 0.0
        floor = max(0.005 * level, 1e-6)
        spread[k] = max(robust_scale(picked), floor)
        noise = max(robust_scale(diff[::_STEP, ::_STEP][sample]), 0.02 * spread[k], floor)
        z2 += (diff / noise) ** 2
    return np.sqrt(z2 / before.shape[0]), spread


def _vegetation(
    before: np.ndarray, after: np.ndarray, bands: tuple[str, ...], params: DetectParams
) -> tuple[np.ndarray, np.ndarray, str] | None:
    first = vegetated(before, bands, params=params)
    if first is None:
        return None
    return first[0], vegetated(after, bands, params=params)[0], first[1]


def _water(
    before: np.ndarray, after: np.ndarray, bands: tuple[str, ...], valid: np.ndarray
) -> np.ndarray:
    """Water in both epochs, bool (h, w); all False without green and near-infrared."""
    first, second = water(before, bands), water(after, bands)
    if first is None or second is None:
        return np.zeros(valid.shape, bool)
    return first & second & valid


def _ground(dsm: np.ndarray, pixel_size: float) -> np.ndarray:
    """Local ground height: a grey opening wider than most buildings (30 m)."""
    size = max(3, int(round(30.0 / pixel_size)))
    return ndi.grey_opening(dsm, size=(size, size))
