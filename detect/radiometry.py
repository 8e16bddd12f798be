"""Radiometric normalisation of a later epoch onto an earlier one, fitted on unchanged pixels.

Sun angle, season, haze and sensor gain make the same ground look brighter or darker from one
quarter to the next. :func:`fit_gain_offset` finds, per band, the linear map that makes the later
epoch look like the earlier one, using only pixels that look unchanged. A Theil-Sen line (median
of pairwise slopes, which ignores up to about a quarter of changed pixels) starts it; then it
alternates dropping pixels whose residual is far outside the robust spread of all residuals with
a reduced major axis fit on the rest (which, unlike least squares, treats both epochs' noise
alike), so real change (new roofs, cleared land) does not bend the fit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_gain_offset", "robust_scale"]

#: Sampling step (px) of the pixels used for the fit; 1/16 of a tile is ample for two numbers.
_STEP = 4
#: Random pixel pairs whose slopes give the Theil-Sen start.
_PAIRS = 20_000


def robust_scale(values: np.ndarray) -> float:
    """Standard deviation estimated from the median absolute deviation (1.4826 MAD).

    Parameters
    ----------
    values : ndarray, any shape
        Finite values; empty gives 0.

    Returns
    -------
    float
    """
    if values.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def fit_gain_offset(
    reference: np.ndarray,
    moving: np.ndarray,
    valid: np.ndarray,
    *,
    iterations: int = 4,
    cutoff: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band gain and offset so that ``gain * moving + offset`` matches ``reference``.

    Parameters
    ----------
    reference, moving : ndarray of float32, shape (n, h, w)
        The same bands of two epochs on the same grid.
    valid : ndarray of bool, shape (h, w)
        Pixels valid in both epochs.
    iterations : int, keyword-only
        Fit / reject rounds.
    cutoff : float, keyword-only
        A pixel counts as changed when any band's residual exceeds ``cutoff`` robust standard
        deviations of that band's residuals.

    Returns
    -------
    gain, offset : ndarray of float64, shape (n,)
        Identity (1, 0) for a band without spread in the unchanged pixels, offset only
        (1, mean difference) when the moving band is flat.
    """
    n = reference.shape[0]
    step = _STEP if valid[::_STEP, ::_STEP].sum() >= 64 else 1
    pick = valid[::step, ::step]
    ref = reference[:, ::step, ::step][:, pick].astype(np.float64)
    mov = moving[:, ::step, ::step][:, pick].astype(np.float64)
    gain, offset = np.ones(n), np.zeros(n)
    if ref.shape[1] == 0:
        return gain, offset
    gain, offset = _theil_sen(ref, mov)
    keep = np.ones(ref.shape[1], bool)
    for _ in range(iterations):
        residual = gain[:, None] * mov + offset[:, None] - ref
        scale = np.array([robust_scale(r[keep]) for r in residual])
        bound = cutoff * np.maximum(scale, 1e-6 * (1.0 + np.abs(ref).mean(axis=1)))
        new_keep = (np.abs(residual) <= bound[:, None]).all(axis=0)
        if new_keep.sum() < max(16, keep.size // 20):
            break
        keep = new_keep
        gain, offset = _reduced_major_axis(ref[:, keep], mov[:, keep])
    return gain, offset


def _theil_sen(ref: np.ndarray, mov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median slope over random pixel pairs and median intercept; (n, m) samples in."""
    m = ref.shape[1]
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, m, _PAIRS), rng.integers(0, m, _PAIRS)
    d_ref, d_mov = ref[:, i] - ref[:, j], mov[:, i] - mov[:, j]
    gain = np.ones(ref.shape[0])
    for band, (dr, dm) in enumerate(zip(d_ref, d_mov, strict=True)):
        spread = np.abs(dm) > 1e-6 * (1.0 + np.abs(mov[band]).mean())
        if spread.sum() >= 16:
            gain[band] = max(float(np.median(dr[spread] / dm[spread])), 0.0) or 1.0
    offset = np.median(ref - gain[:, None] * mov, axis=1)
    return gain, offset


def _reduced_major_axis(ref: np.ndarray, mov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gain = ratio of standard deviations, offset matches the means; (n, m) samples in."""
    ref_mean, mov_mean = ref.mean(axis=1), mov.mean(axis=1)
    ref_std, mov_std = ref.std(axis=1), mov.std(axis=1)
    flat = mov_std <= 1e-6 * (1.0 + np.abs(mov_mean))
    gain = np.where(flat, 1.0, ref_std / np.where(flat, 1.0, mov_std))
    gain = np.where(ref_std <= 1e-6 * (1.0 + np.abs(ref_mean)), 1.0, gain)
    return gain, ref_mean - gain * mov_mean
