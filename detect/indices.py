"""Band indices: vegetation (NDVI, or excess green with RGB only) and water (NDWI)."""

from __future__ import annotations

import numpy as np

from .params import DetectParams

__all__ = ["normalised_difference", "vegetated", "vegetation_index", "water"]


def normalised_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)``, float32, 0 where ``a + b`` vanishes."""
    return _ratio(a - b, a + b)


def vegetation_index(data: np.ndarray, bands: tuple[str, ...]) -> tuple[np.ndarray, str] | None:
    """NDVI when red and near-infrared exist, else normalised excess green from RGB.

    Parameters
    ----------
    data : ndarray of float32, shape (n, h, w)
    bands : tuple of str
        Band names of ``data``.

    Returns
    -------
    (index, name) or None
        ``index`` is float32 (h, w): NDVI ``(nir - red) / (nir + red)`` in [-1, 1], or
        ``(2 green - red - blue) / (red + green + blue)``; ``name`` is ``"ndvi"`` or
        ``"greenness"``. None without the bands either index needs.
    """
    if "red" in bands and "nir" in bands:
        red, nir = data[bands.index("red")], data[bands.index("nir")]
        return normalised_difference(nir, red), "ndvi"
    if {"red", "green", "blue"} <= set(bands):
        r, g, b = (data[bands.index(n)] for n in ("red", "green", "blue"))
        return _ratio(2 * g - r - b, r + g + b), "greenness"
    return None


def vegetated(
    data: np.ndarray, bands: tuple[str, ...], *, params: DetectParams
) -> tuple[np.ndarray, str] | None:
    """Vegetated pixels, (h, w) bool, and the index used; None without the bands for one."""
    index = vegetation_index(data, bands)
    if index is None:
        return None
    values, name = index
    threshold = params.vegetation_ndvi if name == "ndvi" else params.vegetation_greenness
    return values >= threshold, name


def water(data: np.ndarray, bands: tuple[str, ...]) -> np.ndarray | None:
    """Open water, NDWI ``(green - nir) / (green + nir)`` above 0.1; None without the bands."""
    if "green" not in bands or "nir" not in bands:
        return None
    return normalised_difference(data[bands.index("green")], data[bands.index("nir")]) > 0.1


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # The usual case (bands are brightness, so sums are positive): a plain division, much
    # faster than a masked one.
    if den.size and den.min() > 1e-6:
        return np.divide(num, den, dtype=np.float32)
    nonzero = np.abs(den) > 1e-6
    out = np.zeros(num.shape, np.float32)
    np.divide(num, den, out=out, where=nonzero)
    return out
