"""Radiometric normalisation of a later epoch onto an earlier one, fitted on unchanged pixels.

Sun angle, season, haze and sensor gain make the same ground look brighter or darker from one
quarter to the next. :func:`fit_gain_offset` finds, per band, the linear map that makes the later
epoch look like the earlier one, using only pixels that look unchanged. A pixel's *rank* in a
band is untouched by any gain or offset; when part of the tile changes (a cloud takes the top
ranks, a shadow the bottom ones) the other pixels' ranks all slide along one monotone curve.
The unchanged pixels are those closest, in every band, to that curve (the median later rank
for each earlier rank). On them it matches quantiles, a symmetric fit that does not shrink the
gain when the epochs correlate weakly, as least squares would.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .sampling import sample_step, sampled

__all__ = ["fit_gain_offset", "robust_scale"]

#: Sampling steps (px) of the pixels used for the fit: 1/64 of a tile large enough to hold
#: ``detect.sampling.ENOUGH`` samples on that grid, else 1/36; ample for two numbers a band.
_STEPS = (8, 6)
#: Bins of earlier rank over which the median later rank is taken.
_RANK_BINS = 50
#: Quantiles matched between the epochs.
_QUANTILES = np.linspace(0.05, 0.95, 19)
#: Largest factor between two quarters' gains; beyond it the ground changed, not the light.
_MAX_GAIN = 2.0


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
    steady_share: float = 0.3,
    usable: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band gain and offset so that ``gain * moving + offset`` matches ``reference``.

    Parameters
    ----------
    reference, moving : ndarray of float32, shape (n, h, w)
        The same bands of two epochs on the same grid.
    valid : ndarray of bool, shape (h, w)
        Pixels valid in both epochs.
    steady_share : float, keyword-only
        Share of the valid pixels, those whose ranks strayed least from the common rank curve
        (the largest stray over bands), that the quantiles are matched on.
    usable : callable, keyword-only
        Given the sampled pixels of ``reference`` and ``moving`` (each (n, m)), the bool (m,)
        of those to fit on, e.g. those not vegetated (see :func:`detect.pairs.prepare_pairs`);
        None uses every sample.

    Returns
    -------
    gain, offset : ndarray of float64, shape (n,)
        The gain is kept within ``1 / _MAX_GAIN .. _MAX_GAIN``; identity (1, 0) without valid
        pixels; offset only (gain 1) for a band that is flat in either epoch.
    """
    n = reference.shape[0]
    step = sample_step(valid, _STEPS)
    ref = sampled(reference, valid, step=step, minimum=256).astype(np.float64)
    mov = sampled(moving, valid, step=step, minimum=256).astype(np.float64)
    if usable is not None:
        keep = usable(ref, mov)
        ref, mov = ref[:, keep], mov[:, keep]
    if ref.shape[1] == 0:
        return np.ones(n), np.zeros(n)
    stray = _rank_stray(ref, mov).max(axis=0)
    steady = stray <= np.quantile(stray, steady_share)
    gain, offset = np.ones(n), np.zeros(n)
    for k in range(n):
        ref_q = np.quantile(ref[k, steady], _QUANTILES)
        mov_q = np.quantile(mov[k, steady], _QUANTILES)
        if np.ptp(mov_q) > 1e-9 * (1.0 + np.abs(mov_q).max()) and np.ptp(ref_q) > 0:
            slope = np.polyfit(mov_q, ref_q, 1)[0]
            gain[k] = np.clip(slope, 1 / _MAX_GAIN, _MAX_GAIN)
        offset[k] = np.median(ref_q - gain[k] * mov_q)
    return gain, offset


def _rank_stray(ref: np.ndarray, mov: np.ndarray) -> np.ndarray:
    """How far each sample's later rank lies from the median later rank of its earlier-rank bin.

    (n, m) samples in, (n, m) strays in 0..1 out.
    """
    n, m = ref.shape
    ref_order = _stable_order(ref)
    ref_rank, mov_rank = _ranks(ref_order), _ranks(_stable_order(mov))
    bins = min(_RANK_BINS, m)
    stray = np.empty(ref.shape)
    for k in range(n):
        members = ref_order[k, : m // bins * bins].reshape(bins, -1)
        centres = ref_rank[k, members].mean(axis=1)
        medians = np.median(mov_rank[k, members], axis=1)
        stray[k] = np.abs(mov_rank[k] - np.interp(ref_rank[k], centres, medians))
    return stray


def _stable_order(values: np.ndarray) -> np.ndarray:
    """``values.argsort(axis=1, kind="stable")`` of (n, m) samples.

    Imagery is mostly whole numbers of 8 or 16 bits (DN); those are ordered as uint16, which
    numpy sorts stably by radix, many times faster than floats, into the same order.
    """
    if values.size and values.min() >= 0 and values.max() <= np.iinfo(np.uint16).max:
        whole = values.astype(np.uint16)
        if np.array_equal(whole, values):
            return whole.argsort(axis=1, kind="stable")
    return values.argsort(axis=1, kind="stable")


def _ranks(order: np.ndarray) -> np.ndarray:
    """Ranks, scaled to 0..1, of samples whose per-band ``argsort`` is ``order`` (n, m)."""
    ranks = np.empty(order.shape)
    np.put_along_axis(ranks, order, np.arange(order.shape[1], dtype=np.float64), axis=1)
    return ranks / max(order.shape[1] - 1, 1)
