"""Quality figures of one epoch on one tile: how much of it is cloud or haze.

The test is deliberately simple and documented, for the ``tiles`` QA layer, not for detection
(detection compares the two epochs and finds clouds by how the light changed, see
:mod:`detect.nuisance`). A pixel is **cloud or haze** when, in top-of-atmosphere-like
reflectance (uint8 DN / 255, other integer DN / 10000, floats as they are):

* it is bright: the mean of blue, green and red is at least ``min_brightness`` (0.3);
* it is white: the spread of the visible bands is at most ``max_whiteness`` (0.2) of their mean;
* where NIR is known, it is not vegetation or water: NIR / red lies in 0.8 … 1.5;

and it belongs to a smooth region of such pixels, after a morphological opening of
``open_m`` (5 m), of at least ``min_area_m2`` (600 m²): most bright roofs are smaller or
textured. Large bright white roofs still count, so the share is an upper bound.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .sampling import block_sums

__all__ = ["cloud_mask", "cloud_share"]


def _reflectance(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):
        return data.astype(np.float32, copy=False)
    return data.astype(np.float32) / _dn_scale(data.dtype)


def _dn_scale(dtype: np.dtype) -> np.float32:
    """DN per unit of reflectance of an integer dtype."""
    return np.float32(255.0 if dtype == np.uint8 else 10_000.0)


def cloud_mask(
    data: np.ndarray,
    bands: tuple[str, ...],
    valid: np.ndarray,
    *,
    pixel_size: float,
    min_brightness: float = 0.3,
    max_whiteness: float = 0.2,
    open_m: float = 5.0,
    min_area_m2: float = 600.0,
) -> np.ndarray:
    """Pixels of cloud or haze (see the module docstring).

    Parameters
    ----------
    data : ndarray, shape (n, h, w)
        Bands in their stored dtype.
    bands : tuple of str
        Band names; needs ``blue``, ``green`` and ``red`` (``nir`` is used when present).
    valid : ndarray of bool, shape (h, w)
    pixel_size : float
        Metres per pixel.

    Returns
    -------
    ndarray of bool, shape (h, w)
        All false when the visible bands are not all there.
    """
    if not {"blue", "green", "red"} <= set(bands) or not valid.any():
        return np.zeros(valid.shape, bool)
    refl = _reflectance(data)
    vis = np.stack([refl[bands.index(b)] for b in ("blue", "green", "red")])
    mean = vis.mean(axis=0)
    whiteness = (vis.max(axis=0) - vis.min(axis=0)) / np.maximum(mean, 1e-6)
    candidate = valid & (mean >= min_brightness) & (whiteness <= max_whiteness)
    if "nir" in bands:
        ratio = refl[bands.index("nir")] / np.maximum(vis[2], 1e-6)
        candidate &= (ratio >= 0.8) & (ratio <= 1.5)
    if not candidate.any():  # clear sky, as on most tiles: nothing to open or label
        return candidate
    radius = max(1, round(open_m / pixel_size / 2))
    candidate = ndi.binary_opening(candidate, structure=np.ones((3, 3)), iterations=radius)
    labels, n = ndi.label(candidate)
    if n == 0:
        return candidate
    sizes = np.bincount(labels.ravel())
    keep = sizes * pixel_size**2 >= min_area_m2
    keep[0] = False
    return keep[labels]


def cloud_share(
    data: np.ndarray, bands: tuple[str, ...], valid: np.ndarray, *, pixel_size: float
) -> float:
    """Share (0–1) of the valid pixels that are cloud or haze.

    Clouds are large, so the test runs on cells of about ``_CELL_M`` (the mean of each cell's
    valid pixels), a sixteenth of the pixels of a 0.5 m tile.
    """
    n = int(valid.sum())
    if n == 0:
        return 0.0
    step = max(1, int(round(_CELL_M / pixel_size)))
    if step == 1 or min(valid.shape) < 4 * step:
        return float((cloud_mask(data, bands, valid, pixel_size=pixel_size) & valid).sum() / n)
    cells, counts = _cell_means(data, valid, step)
    if not np.issubdtype(data.dtype, np.floating):
        cells /= _dn_scale(data.dtype)
    cloudy = cloud_mask(cells, bands, counts > 0, pixel_size=pixel_size * step)
    return float(counts[cloudy].sum() / n)


#: Side (m) of the cells :func:`cloud_share` looks for clouds on.
_CELL_M = 2.0


def _cell_means(data: np.ndarray, valid: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Means (float32) over the valid pixels of ``step`` x ``step`` cells (the last ones may
    be smaller) and the count of valid pixels in each."""
    h, w = valid.shape
    pad = ((0, -h % step), (0, -w % step))
    if any(p[1] for p in pad):
        data = np.pad(data, ((0, 0), *pad))
        valid = np.pad(valid, pad)
    if not valid.all():
        data = np.where(valid, data, 0)
    counts = block_sums(valid, step)
    return block_sums(data, step) / np.maximum(counts, 1.0), counts
