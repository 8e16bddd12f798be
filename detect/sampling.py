"""Regular pixel samples: tile statistics (medians, percentiles) need a fraction of the pixels."""

from __future__ import annotations

import numpy as np

__all__ = ["sampled"]


def sampled(
    values: np.ndarray, mask: np.ndarray, *, step: int = 4, minimum: int = 64
) -> np.ndarray:
    """Values at the True pixels of ``mask`` on a grid ``step`` pixels apart.

    Parameters
    ----------
    values : ndarray, shape (..., h, w)
    mask : ndarray of bool, shape (h, w)
    step : int, keyword-only
        Grid spacing; every pixel is taken when the grid holds fewer than ``minimum`` True
        pixels (small tiles, sparse masks).
    minimum : int, keyword-only

    Returns
    -------
    ndarray, shape (..., m)
        ``m`` may be 0.
    """
    if mask[::step, ::step].sum() < minimum:
        step = 1
    return values[..., ::step, ::step][..., mask[::step, ::step]]
