"""Regular pixel samples: tile statistics (medians, percentiles) need a fraction of the pixels."""

from __future__ import annotations

import numpy as np

__all__ = ["ENOUGH", "block_sums", "sample_step", "sampled"]

#: Samples that pin down a tile statistic: the median of this many is within about 1 % of the
#: spread of the whole (its standard error is 1.25 / sqrt(n) of the standard deviation).
ENOUGH = 16_384


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


def sample_step(mask: np.ndarray, steps: tuple[int, ...], *, enough: int = ENOUGH) -> int:
    """The first (coarsest) of ``steps`` whose grid holds at least ``enough`` True pixels of
    ``mask``, else the last (finest): a large tile's statistics need not take as many samples
    as a small image's."""
    for step in steps[:-1]:
        if mask[::step, ::step].sum() >= enough:
            return step
    return steps[-1]


def block_sums(data: np.ndarray, step: int) -> np.ndarray:
    """Sums of ``step`` x ``step`` blocks over the last two axes, float32; rows and columns
    beyond the last whole block are left out."""
    h, w = data.shape[-2] // step * step, data.shape[-1] // step * step
    lead = data.shape[:-2]
    # The rows of each block added first (whole runs of memory), then the columns of the
    # smaller sums: a few adds, faster than numpy's reductions over a short axis.
    runs = data[..., :h, :w].reshape(*lead, h // step, step, w)
    rows = runs[..., 0, :].astype(np.float32)
    for i in range(1, step):
        rows += runs[..., i, :]
    cells = rows.reshape(*lead, h // step, w // step, step)
    total = cells[..., 0].copy()
    for j in range(1, step):
        total += cells[..., j]
    return total
