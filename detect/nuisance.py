"""Illumination nuisances: shadows, clouds, haze and cloud shadows between two epochs.

They are recognised from how the *light* changed rather than the ground:

* a **shadow** that appeared (or went) darkens (or brightens) every band by about the same,
  large factor, the shadowed side is dark and the lit side no brighter than common ground:
  the ground is the same, only less lit (a new white roof over an old shadow is not). A new
  building's own shadow is one, and so is the shadow of a demolished one that went away; they
  are not change, but they tell which side of a change stands higher.
* a **cloud** is brighter in every band than almost anything in the other epoch, and large.
  Around it, **haze** mixes the ground with the cloud's colour: ``cloudy = (1 - a) * clear +
  a * white`` with the same opacity ``a`` in every band.
* a **cloud shadow** is a large shadow (every band darkened by about the same factor); its
  rim, where the factor fades towards 1, joins it.

Ratios are taken on linear brightness: drone orthomosaics (sRGB-like, 0..255) are linearised
with a 2.2 gamma first, satellite DN are taken as linear.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Illumination", "illumination_changes"]

#: Largest spread between the bands' factors (max / min) of a shadow.
_FLAT = 1.8
#: A shadowed pixel is darker, its lit self no brighter, than these shares of the lit epoch's
#: median brightness.
_DARK = 0.75
_LIT = 1.75
#: Percentile of the other epoch every band of a cloud pixel exceeds.
_BRIGHTEST = 99.5
#: Haze: smallest opacity, and the largest spread of the bands' opacities (plus a share of it).
_HAZE_MIN = 0.03
_HAZE_SPREAD = (0.04, 0.25)
#: Rim of a cloud shadow: every band darkened by at least this factor.
_RIM = 0.96
#: Haze and rims are looked for this many core radii around a cloud or cloud shadow.
_REACH = 2.0
#: Margin (m) added around a cloud and its shadow.
_MARGIN_M = 4.0
#: Display gamma of drone orthomosaics.
_GAMMA = 2.2
#: Sampling step (px) for percentiles.
_STEP = 4


class Illumination(NamedTuple):
    """Where light, not ground, changed; every array (h, w) bool.

    ``shadow_before`` / ``shadow_after``: in shadow in that epoch only (shadows of objects);
    ``cloud``: cloud, haze or cloud shadow in either epoch.
    """

    shadow_before: np.ndarray
    shadow_after: np.ndarray
    cloud: np.ndarray


def illumination_changes(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    *,
    kind: str,
    pixel_size: float,
    shadow_ratio: float,
    cloud_min_area_m2: float,
) -> Illumination:
    """Find shadows, clouds, haze and cloud shadows that differ between two epochs.

    Parameters
    ----------
    before, after : ndarray of float32, shape (n, h, w)
        One optical pair in the before epoch's units (after normalisation), n >= 1.
    valid : ndarray of bool, shape (h, w)
        Pixels valid in both epochs.
    kind : str, keyword-only
        The pair's kind: ``"drone..."`` (display-encoded 0..255) or anything else (linear DN).
    pixel_size : float, keyword-only
        Metres per pixel.
    shadow_ratio : float, keyword-only
        A shadow darkens every band to at most this share of its lit brightness.
    cloud_min_area_m2 : float, keyword-only
        Smallest cloud (or cloud shadow) core; smaller bright or dark patches are objects.

    Returns
    -------
    Illumination
    """
    lin = (_linear(before, kind), _linear(after, kind))
    if not valid.any():
        empty = np.zeros(valid.shape, bool)
        return Illumination(empty, empty, empty)
    level = np.array([max(float(np.median(b[::_STEP, ::_STEP])), 1e-6) for b in lin[0]])
    eps = 1e-3 * level[:, None, None]
    log_ratio = np.log((lin[1] + eps) / (lin[0] + eps))
    highest, lowest = log_ratio.max(axis=0), log_ratio.min(axis=0)
    flat = valid & (highest - lowest < np.log(_FLAT))
    shadow_after = flat & (highest < np.log(shadow_ratio)) & _shaded(lin[1], lin[0], valid)
    shadow_before = flat & (lowest > -np.log(shadow_ratio)) & _shaded(lin[0], lin[1], valid)
    min_px = cloud_min_area_m2 / pixel_size**2
    cloud = np.zeros(valid.shape, bool)
    for cloudy, clear, shade, ratio in (
        (lin[1], lin[0], shadow_after, highest),
        (lin[0], lin[1], shadow_before, -lowest),
    ):
        core = _large(_brighter_than_all(cloudy, clear, valid), min_px)
        if core.any():
            cloud |= core | (_near(core) & _haze(cloudy, clear, core, valid))
        shade_core = _large(shade, min_px)
        if shade_core.any():
            cloud |= shade_core | (_near(shade_core) & flat & (ratio < np.log(_RIM)))
    if cloud.any():
        cloud = ndi.binary_fill_holes(cloud)
        cloud = valid & (ndi.distance_transform_edt(~cloud) <= _MARGIN_M / pixel_size)
    return Illumination(shadow_before & ~cloud, shadow_after & ~cloud, cloud)


def _linear(data: np.ndarray, kind: str) -> np.ndarray:
    if kind.startswith("drone"):
        return (np.clip(data, 0.0, 255.0) / 255.0) ** _GAMMA
    return np.maximum(data, 0.0)


def _shaded(shadowed: np.ndarray, lit: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels dark enough in ``shadowed`` and not too bright in ``lit`` to be a shadow."""
    brightness = lit.mean(axis=0)
    typical = np.median(brightness[::_STEP, ::_STEP][valid[::_STEP, ::_STEP]])
    return (shadowed.mean(axis=0) < _DARK * typical) & (brightness < _LIT * typical)


def _brighter_than_all(image: np.ndarray, other: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels of ``image`` brighter in every band than the other epoch's brightest pixels."""
    sample = valid[::_STEP, ::_STEP]
    if not sample.any():
        return np.zeros(valid.shape, bool)
    out = valid.copy()
    for band, ref in zip(image, other, strict=True):
        out &= band > np.percentile(ref[::_STEP, ::_STEP][sample], _BRIGHTEST)
    return out


def _haze(cloudy: np.ndarray, clear: np.ndarray, core: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels where ``cloudy`` mixes ``clear`` with the core's colour by one opacity."""
    white = np.array([np.median(band[core]) for band in cloudy])[:, None, None]
    span = white - clear
    with np.errstate(invalid="ignore", divide="ignore"):
        opacity = np.where(span > 0, (cloudy - clear) / span, np.nan)
    mean = opacity.mean(axis=0)
    spread = opacity.max(axis=0) - opacity.min(axis=0)
    return valid & (mean >= _HAZE_MIN) & (spread <= _HAZE_SPREAD[0] + _HAZE_SPREAD[1] * mean)


def _near(core: np.ndarray) -> np.ndarray:
    """Within ``_REACH`` equivalent radii of a core."""
    reach = _REACH * np.sqrt(core.sum() / np.pi)
    return ndi.distance_transform_edt(~core) <= reach


def _large(mask: np.ndarray, min_px: float) -> np.ndarray:
    """The connected parts of ``mask`` with at least ``min_px`` pixels."""
    if not mask.any():
        return mask
    labels, n = ndi.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    return (sizes >= min_px)[labels]
