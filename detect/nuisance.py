"""Illumination nuisances: shadows, clouds, haze and cloud shadows between two epochs.

They are recognised from how the *light* changed rather than the ground:

* a **shadow** that appeared (or went) darkens (or brightens) every band by about the same,
  large factor, but blue the least: a shadow is lit by the blue sky alone. The shadowed side
  is dark and the lit side no brighter than common ground: the ground is the same, only less
  lit (a new white roof over an old shadow is not, nor is a dark roof built on bare ground,
  which darkens blue as much as red). A new
  building's own shadow is one, and so is the shadow of a demolished one that went away; they
  are not change, but they tell which side of a change stands higher.
* a **cloud** is brighter in every visible band than almost anything in the other epoch, and
  large. Around it, **haze** mixes the ground with the cloud's colour: ``cloudy = (1 - a) *
  clear + a * white`` with the same opacity ``a`` in every visible band (not in ``nir``, which
  vegetation changes with the season). A cloud is soft: across its edge the opacity fades
  gradually, where a new white roof goes from its own colour to unchanged ground within a
  pixel, so a bright patch counts as a cloud only when a good share of its edge zone is
  partly opaque haze.
* a **cloud shadow** has the cloud's own shape, moved away from it: where a cloud is found,
  its shadow is the cloud moved by the offset under which the ground darkens most. Without a
  cloud in view (it may lie beyond the tile), a large shadow (every band darkened by about the
  same factor) is one. Either way its rim, where the factor fades towards 1, joins it.

Ratios are taken on linear brightness: drone orthomosaics (sRGB-like, 0..255) are decoded with
a 2.2 gamma, satellite DN are taken as linear.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from .morphology import fill_holes
from .sampling import block_sums, sampled

__all__ = ["CloudCells", "cloud_cells", "cloud_mask", "clouds", "shadows"]

#: Largest spread between the bands' factors (max / min) of a shadow.
_FLAT = 1.8
#: Least factor by which a shadow keeps more blue than red light.
_BLUER = 1.1
#: A shadowed pixel is darker, its lit self no brighter, than these shares of the lit epoch's
#: median brightness.
_DARK = 0.75
_LIT = 1.75
#: Percentile of the other epoch every band of a cloud pixel exceeds.
_BRIGHTEST = 99.5
#: Haze: smallest opacity, and the largest spread of the bands' opacities (plus a share of it).
_HAZE_MIN = 0.03
_HAZE_SPREAD = (0.04, 0.25)
#: A cloud's edge zone, this far (m) either side of its core's outline, is at least this share
#: partly opaque haze: opacity in _SOFT_OPACITY, the core's brightest colour being opaque.
_SOFT_EDGE_M = 6.0
_SOFT_SHARE = 0.4
_SOFT_OPACITY = (0.05, 0.8)
#: A cloud's shadow: at least _CAST_SEEN of the moved cloud on valid pixels, _CAST_HITS of
#: those darkened, and by _CAST_DARK on average.
_CAST_SEEN = 0.5
_CAST_HITS = 0.6
_CAST_DARK = 0.1
#: Rim of a cloud shadow: every band darkened by at least this factor.
_RIM = 0.96
#: A shadow with no cloud in view is a cloud's only from this many times the smallest cloud
#: (a tall building's shadow can pass the smallest cloud's size).
_LONE_SHADOW = 5.0
#: Gaps (cells) a rim may have and still join its cloud or cloud shadow.
_GAP = 2
#: Haze and rims are looked for this many core radii around a cloud or cloud shadow.
_REACH = 2.0
#: Margin (m) added around a cloud and its shadow.
_MARGIN_M = 4.0
#: Side (m) of the cells clouds are looked for on.
_CLOUD_CELL_M = 2.0
#: Display gamma of drone orthomosaics.
_GAMMA = 2.2
#: Sampling step (px) for medians.
_STEP = 4


class _Ratios(NamedTuple):
    """Per-pixel change of light between the epochs, (h, w) each."""

    highest: np.ndarray  # largest log ratio after / before over bands (linear brightness)
    lowest: np.ndarray  # smallest
    flat: np.ndarray  # valid, and the bands' ratios within a factor _FLAT of each other
    bluer: np.ndarray | None  # log ratio of blue minus that of red; None without both bands
    gamma: float  # display gamma of the pair's values


def shadows(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    *,
    bands: tuple[str, ...],
    kind: str,
    shadow_ratio: float,
    lit: tuple[float, float] | None = None,
    median: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels in shadow in one epoch only.

    Parameters
    ----------
    before, after : ndarray of float32, shape (n, h, w)
        One optical pair in the before epoch's units (after normalisation), n >= 1.
    valid : ndarray of bool, shape (h, w)
        Pixels valid in both epochs.
    bands : tuple of str, keyword-only
        Band names; with ``blue`` and ``red`` a shadow must keep more blue than red.
    kind : str, keyword-only
        The pair's kind: ``"drone..."`` (display-encoded 0..255) or anything else (linear DN).
    shadow_ratio : float, keyword-only
        A shadow darkens every band to at most this share of its lit brightness.
    lit : tuple of float, keyword-only
        Typical (median) brightness of the valid pixels of the before and the after epoch;
        None takes them from these arrays (give the whole tile's for a window of it).
    median : ndarray, shape (n,), keyword-only
        Each before band's median, the scale of the ratios' guard against zero; None takes
        it from these arrays.

    Returns
    -------
    shadow_before, shadow_after : ndarray of bool, shape (h, w)
    """
    ratios = _ratios(before, after, valid, bands, kind, median)
    return _shadows(before, after, valid, ratios, shadow_ratio, lit)


class CloudCells(NamedTuple):
    """An optical pair as the ``_CLOUD_CELL_M`` cells (block means) that clouds are looked
    for on, and the tile they came from (see :func:`cloud_cells`).

    ``before``, ``after`` float32 (n, h', w'); ``valid`` bool (h', w'): cells whose every
    pixel is valid in both epochs; ``step``: pixels per cell side; ``pixel_size``: metres per
    cell; ``shape``: (h, w) of the tile.
    """

    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    step: int
    pixel_size: float
    shape: tuple[int, int]


def cloud_cells(
    before: np.ndarray, after: np.ndarray, valid: np.ndarray, *, pixel_size: float
) -> CloudCells:
    """The :class:`CloudCells` of a pair (arrays as for :func:`cloud_mask`).

    A cell mean is linear in the pixels, so the cells of a radiometric fit of ``after`` are
    the fit of its cells: the pair is averaged once for every fit tried on it.
    """
    shape = valid.shape
    step = min(max(1, int(round(_CLOUD_CELL_M / pixel_size))), *shape)
    return CloudCells(
        _blocks(before, step),
        _blocks(after, step),
        _blocks(valid, step) == 1,
        step,
        pixel_size * step,
        shape,
    )


def cloud_mask(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    *,
    bands: tuple[str, ...],
    kind: str,
    pixel_size: float,
    shadow_ratio: float,
    cloud_min_area_m2: float,
) -> np.ndarray:
    """Cloud, haze and cloud shadow in either epoch, with a margin of ``_MARGIN_M``.

    Clouds are large and soft, so they are looked for on ``_CLOUD_CELL_M`` cells (block means,
    :func:`cloud_cells`), which also quiets the noise of dark, shadowed pixels.

    Parameters
    ----------
    before, after : ndarray of float32, shape (n, h, w)
        One optical pair in the before epoch's units (after normalisation), n >= 1.
    valid : ndarray of bool, shape (h, w)
        Pixels valid in both epochs.
    bands : tuple of str, keyword-only
        Band names; a cloud must outshine the other epoch in every band but ``nir`` (where
        vegetation is as bright as a thin cloud).
    kind : str, keyword-only
        The pair's kind: ``"drone..."`` (display-encoded 0..255) or anything else (linear DN).
    pixel_size : float, keyword-only
        Metres per pixel.
    shadow_ratio : float, keyword-only
        A shadow darkens every band to at most this share of its lit brightness.
    cloud_min_area_m2 : float, keyword-only
        Smallest cloud core; a shadow with no cloud in view must be ``_LONE_SHADOW`` times
        larger.

    Returns
    -------
    ndarray of bool, shape (h, w)
    """
    return clouds(
        cloud_cells(before, after, valid, pixel_size=pixel_size),
        bands=bands,
        kind=kind,
        shadow_ratio=shadow_ratio,
        cloud_min_area_m2=cloud_min_area_m2,
    )


def clouds(
    cells: CloudCells,
    *,
    bands: tuple[str, ...],
    kind: str,
    shadow_ratio: float,
    cloud_min_area_m2: float,
) -> np.ndarray:
    """:func:`cloud_mask` of a pair given as its :class:`CloudCells` (the later epoch
    normalised), bool (h, w) of the tile."""
    before, after, valid, step, pixel_size, full_shape = cells
    cloud = np.zeros(valid.shape, bool)
    if not valid.any():
        return np.zeros(full_shape, bool)
    ratios = _ratios(before, after, valid, bands, kind)
    shadow_before, shadow_after = _shadows(before, after, valid, ratios, shadow_ratio)
    min_px = cloud_min_area_m2 / pixel_size**2
    visible = [k for k, name in enumerate(bands) if name != "nir"] or list(range(len(bands)))
    for cloudy, clear, shade, ratio in (
        (after, before, shadow_after, ratios.highest),
        (before, after, shadow_before, -ratios.lowest),
    ):
        core = _large(_brighter_than_all(cloudy[visible], clear[visible], valid), min_px)
        if core.any():
            gamma = ratios.gamma
            seen = _linear(cloudy[visible], gamma), _linear(clear[visible], gamma)
            haze_core = core
            core = _soft(core, *seen, valid, pixel_size)
        if core.any():
            body = core | (_near(core) & _haze(*seen, haze_core, valid))
            darkened = ratio < np.log(_RIM)  # every band darker
            cast = _cast_shadow(body, np.where(body, 0.0, np.maximum(-ratio, 0.0)), valid)
            cloud |= body | _joined(cast, _near(cast) & darkened)
        shade_core = _large(shade, _LONE_SHADOW * min_px)
        if shade_core.any():
            rim = _near(shade_core) & ratios.flat & (ratio < np.log(_RIM))
            cloud |= _joined(shade_core, rim)
    if not cloud.any():
        return np.zeros(full_shape, bool)
    cloud = fill_holes(cloud)
    cloud = ndi.distance_transform_edt(~cloud) <= _MARGIN_M / pixel_size
    cloud = np.repeat(np.repeat(cloud, step, axis=0), step, axis=1)
    missing = [(0, full - part) for full, part in zip(full_shape, cloud.shape, strict=True)]
    return np.pad(cloud, missing, mode="edge")


def _ratios(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    bands: tuple[str, ...],
    kind: str,
    median: np.ndarray | None = None,
) -> _Ratios:
    gamma = _GAMMA if kind.startswith("drone") else 1.0
    before, after = np.maximum(before, 0.0), np.maximum(after, 0.0)
    if median is None:
        median = np.array([np.median(b[::_STEP, ::_STEP]) for b in before])
    level = np.maximum(np.asarray(median, np.float64), 1e-6)
    eps = np.float32(1e-3) * level.astype(np.float32)[:, None, None]
    log_ratio = np.float32(gamma) * np.log((after + eps) / (before + eps))
    highest, lowest = log_ratio.max(axis=0), log_ratio.min(axis=0)
    flat = valid & (highest - lowest < np.log(_FLAT))
    bluer = None
    if "blue" in bands and "red" in bands:
        bluer = log_ratio[bands.index("blue")] - log_ratio[bands.index("red")]
    return _Ratios(highest, lowest, flat, bluer, gamma)


def _shadows(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray,
    ratios: _Ratios,
    shadow_ratio: float,
    lit: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    limit = np.log(shadow_ratio)
    gamma = ratios.gamma
    lit_before, lit_after = lit or (None, None)
    shadow_after = (
        ratios.flat & (ratios.highest < limit) & _shaded(after, before, valid, gamma, lit_before)
    )
    shadow_before = (
        ratios.flat & (ratios.lowest > -limit) & _shaded(before, after, valid, gamma, lit_after)
    )
    if ratios.bluer is not None:
        shadow_after &= ratios.bluer > np.log(_BLUER)
        shadow_before &= ratios.bluer < -np.log(_BLUER)
    return shadow_before, shadow_after


def _linear(data: np.ndarray, gamma: float) -> np.ndarray:
    """Display-encoded 0..255 values (``gamma`` > 1) to linear brightness; DN stay as they are."""
    return data if gamma == 1.0 else (np.minimum(data, 255.0) / 255.0) ** gamma


def _shaded(
    shadowed: np.ndarray,
    lit: np.ndarray,
    valid: np.ndarray,
    gamma: float,
    typical: float | None = None,
) -> np.ndarray:
    """Pixels dark enough in ``shadowed`` and not too bright in ``lit`` to be a shadow.

    Brightness is the mean over bands of the encoded values; the linear thresholds are encoded
    with the same gamma and scale with ``typical``, the median brightness of ``lit`` over the
    valid pixels (taken here when None; NaN when there are none).
    """
    brightness = lit.mean(axis=0)
    if typical is None:
        lit_values = sampled(brightness, valid)
        typical = float(np.median(lit_values)) if lit_values.size else np.nan
    if not np.isfinite(typical):
        return np.zeros(valid.shape, bool)
    dark = shadowed.mean(axis=0) < _DARK ** (1 / gamma) * typical
    return dark & (brightness < _LIT ** (1 / gamma) * typical)


def _brighter_than_all(image: np.ndarray, other: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels of ``image`` brighter in every band than the other epoch's brightest pixels."""
    reference = sampled(other, valid)
    if reference.shape[-1] == 0:
        return np.zeros(valid.shape, bool)
    out = valid.copy()
    for band, ref in zip(image, reference, strict=True):
        out &= band > np.percentile(ref, _BRIGHTEST)
    return out


def _haze(cloudy: np.ndarray, clear: np.ndarray, core: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels where ``cloudy`` mixes ``clear`` with the core's colour by one opacity."""
    mean, alike = _opacity(cloudy, clear, np.median(cloudy[:, core], axis=1))
    return valid & alike & (mean >= _HAZE_MIN)


def _opacity(
    cloudy: np.ndarray, clear: np.ndarray, white: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the mean over bands of the opacity ``a`` in ``cloudy = (1 - a) * clear +
    a * white``, and whether the bands' opacities agree (within ``_HAZE_SPREAD``)."""
    span = white[:, None, None] - clear
    with np.errstate(invalid="ignore", divide="ignore"):
        opacity = np.where(span > 0, (cloudy - clear) / span, np.nan)
    mean = opacity.mean(axis=0)
    spread = opacity.max(axis=0) - opacity.min(axis=0)
    return mean, spread <= _HAZE_SPREAD[0] + _HAZE_SPREAD[1] * mean


def _cast_shadow(body: np.ndarray, darkness: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Where ``body`` (a cloud) casts its shadow: the cloud's own shape, moved by the offset
    under which most of the ground it covers darkened by at least ``1 - _RIM`` (one offset
    for every cloud in view: one sun, one cloud height).

    Counting darkened pixels, rather than summing how dark they got, makes a faint shadow of
    the cloud's size outweigh a small, very dark patch (a new dark roof). The moved cloud must
    cover valid pixels for at least ``_CAST_SEEN`` of its size, ``_CAST_HITS`` of them
    darkened and the mean darkening at least ``_CAST_DARK``; else the shadow is not in view
    (or not told apart) and nothing is returned. The counts under every offset at once are
    cross-correlations, taken with FFTs on arrays padded to twice the size (nothing wraps).

    Parameters
    ----------
    body : ndarray of bool, shape (h, w)
    darkness : ndarray of float, shape (h, w)
        How much every band darkened (minus the largest log ratio over bands, >= 0; 0 on
        the cloud). Not only where the bands darkened alike: the shape does the telling.
    valid : ndarray of bool, shape (h, w)
    """
    h, w = body.shape
    shape = (2 * h, 2 * w)
    spectrum = np.conj(np.fft.rfft2(body.astype(np.float32), shape))

    def correlate(image: np.ndarray) -> np.ndarray:
        # out[dr, dc] = sum over x of body[x] * image[x + (dr, dc)], offsets wrapped mod shape
        return np.fft.irfft2(np.fft.rfft2(image.astype(np.float32), shape) * spectrum, shape)

    darkened = valid & (darkness > -np.log(_RIM))
    hits = correlate(darkened)
    hits[0, 0] = 0.0
    best = np.unravel_index(int(np.argmax(hits)), shape)
    seen = float(correlate(valid)[best])
    dark = float(correlate(np.where(valid, darkness, 0.0))[best])
    if (
        seen < _CAST_SEEN * float(body.sum())
        or hits[best] < _CAST_HITS * seen
        or dark < -np.log(1.0 - _CAST_DARK) * seen
    ):
        return np.zeros(body.shape, bool)
    dr, dc = (int(d) if d < n else int(d) - 2 * n for d, n in zip(best, (h, w), strict=True))
    cast = np.zeros(body.shape, bool)
    rows, cols = np.nonzero(body)
    rows, cols = rows + dr, cols + dc
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    cast[rows[inside], cols[inside]] = True
    return cast & ~body


def _soft(
    core: np.ndarray, cloudy: np.ndarray, clear: np.ndarray, valid: np.ndarray, pixel_size: float
) -> np.ndarray:
    """The connected parts of ``core`` whose edge zone (``_SOFT_EDGE_M`` either side of the
    outline, valid pixels) is at least ``_SOFT_SHARE`` partly opaque haze: every band mixing
    the clear ground with the core's brightest colour (90th percentile) by one opacity, in
    ``_SOFT_OPACITY``."""
    white = np.percentile(cloudy[:, core], 90, axis=1)
    reach = _SOFT_EDGE_M / pixel_size
    # Only the core's surroundings count: work on its bounding box and the reach around it
    # (nothing farther is in an edge zone; the same labels, distances and owners there).
    found = np.nonzero(core.any(axis=1))[0], np.nonzero(core.any(axis=0))[0]
    margin = int(np.ceil(reach)) + 1
    box = tuple(
        slice(max(int(at[0]) - margin, 0), min(int(at[-1]) + margin + 1, size))
        for at, size in zip(found, core.shape, strict=True)
    )
    kept = np.zeros(core.shape, bool)
    core, cloudy, clear, valid = (
        core[box],
        cloudy[(slice(None), *box)],
        clear[(slice(None), *box)],
        valid[box],
    )
    mean, alike = _opacity(cloudy, clear, white)
    low, high = _SOFT_OPACITY
    partial = alike & (mean >= low) & (mean <= high)
    labels, n = ndi.label(core)
    outside, (rows, cols) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    # Core pixels farther than reach from any pixel outside the core: the core eroded by the
    # disk of that radius (what a distance transform of the core tells, several times faster).
    side = int(reach)
    offsets = np.arange(-side, side + 1)
    disk = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= reach**2
    deep = ndi.binary_erosion(core, disk, border_value=1)
    zone = valid & (outside <= reach) & ~deep
    owner = labels[rows[zone], cols[zone]]
    total = np.bincount(owner, minlength=n + 1)
    soft = np.bincount(owner, weights=partial[zone], minlength=n + 1)
    keep = soft >= _SOFT_SHARE * np.maximum(total, 1)
    keep[0] = False
    kept[box] = keep[labels]
    return kept


def _joined(core: np.ndarray, around: np.ndarray) -> np.ndarray:
    """``core`` and the parts of ``around`` connected to it across gaps of up to
    ``_GAP`` cells (a fading rim is speckled)."""
    if not core.any():
        return core
    either = core | around
    labels, n = ndi.label(ndi.binary_dilation(either, iterations=_GAP))
    touching = np.zeros(n + 1, bool)
    touching[labels[core]] = True
    touching[0] = False
    return either & touching[labels]


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


def _blocks(data: np.ndarray, step: int) -> np.ndarray:
    """Means of ``step`` x ``step`` blocks over the last two axes, float32; rows and columns
    beyond the last whole block are left out."""
    return block_sums(data, step) / np.float32(step * step)
