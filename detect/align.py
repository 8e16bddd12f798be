"""Sub-pixel co-registration of two epochs by phase correlation.

Orthomosaics and satellite scenes of different quarters are typically off by a few pixels.
:func:`estimate_shift` measures the translation on gradient images (which do not care about gain
and offset between epochs), :func:`apply_shift` moves the later epoch onto the earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

__all__ = ["Shift", "apply_shift", "estimate_shift", "registration_image"]

#: Radius (px) around the correlation peak that belongs to the peak, not to the side lobes.
_PEAK_RADIUS = 3


@dataclass(frozen=True)
class Shift:
    """A translation that registers a moving image onto a reference image.

    Attributes
    ----------
    row, col : float
        Pixels to move the moving image by (positive = down / right), as
        :func:`skimage.registration.phase_cross_correlation` reports them.
    confidence : float
        0..1: one minus the ratio of the highest side lobe to the peak of the phase
        correlation surface; near 0 for unrelated or featureless images, near 1 for a clean match.
    applied : bool
        Whether the moving epoch was resampled by this shift.
    """

    row: float = 0.0
    col: float = 0.0
    confidence: float = 0.0
    applied: bool = False

    @property
    def magnitude(self) -> float:
        """Length of the shift in pixels."""
        return float(np.hypot(self.row, self.col))


def registration_image(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A gain-free, tapered edge image to phase-correlate.

    Each band is scaled by its robust spread, the bands are averaged, and the gradient magnitude
    of the average (Gaussian, sigma 1 px) is centred on its mean over valid pixels. Invalid
    pixels and a 2 px margin around them are zero; a Hann window times a blurred valid mask
    tapers the result to zero at the tile border and at nodata edges.

    Parameters
    ----------
    data : ndarray of float32, shape (n, h, w)
        Bands of one epoch (invalid pixels already filled with finite values).
    valid : ndarray of bool, shape (h, w)
        Pixels to use; pass the pixels valid in *both* epochs so both images share one support.

    Returns
    -------
    ndarray of float32, shape (h, w)
    """
    inner = ndi.binary_erosion(valid, iterations=2)
    h, w = valid.shape
    if not inner.any():
        return np.zeros((h, w), np.float32)
    mean = np.zeros((h, w), np.float32)
    for band in data:
        values = band[::4, ::4][inner[::4, ::4]] if inner[::4, ::4].any() else band[inner]
        low, high = np.percentile(values, [25, 75])
        mean += band / max(float(high - low), 1e-6)
    edges = ndi.gaussian_gradient_magnitude(mean, 1.0)
    edges -= edges[inner].mean()
    taper = ndi.gaussian_filter(inner.astype(np.float32), 4.0)
    taper *= np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    return np.where(inner, edges * taper, 0.0).astype(np.float32)


def estimate_shift(
    reference: np.ndarray, moving: np.ndarray, *, upsample_factor: int = 20
) -> Shift:
    """Measure the translation of ``moving`` relative to ``reference``.

    Parameters
    ----------
    reference, moving : ndarray of float32, shape (h, w)
        Registration images (see :func:`registration_image`) of the two epochs.
    upsample_factor : int, keyword-only
        Sub-pixel precision is ``1 / upsample_factor`` px.

    Returns
    -------
    Shift
        Not applied; ``confidence`` is 0 for featureless images.
    """
    if not reference.any() or not moving.any():
        return Shift()
    ref_f = scipy.fft.fft2(reference)
    mov_f = scipy.fft.fft2(moving)
    shift, _, _ = phase_cross_correlation(
        ref_f, mov_f, space="fourier", upsample_factor=upsample_factor
    )
    return Shift(float(shift[0]), float(shift[1]), _peak_confidence(ref_f, mov_f))


def apply_shift(
    data: np.ndarray, valid: np.ndarray, shift: Shift
) -> tuple[np.ndarray, np.ndarray]:
    """Resample one epoch by a shift (bilinear); pixels moved in from outside become invalid.

    Parameters
    ----------
    data : ndarray of float32, shape (n, h, w)
    valid : ndarray of bool, shape (h, w)
    shift : Shift

    Returns
    -------
    data : ndarray of float32, shape (n, h, w)
    valid : ndarray of bool, shape (h, w)
    """
    offset = (shift.row, shift.col)
    moved = np.stack([ndi.shift(band, offset, order=1, mode="nearest") for band in data])
    still_valid = ndi.shift(valid.astype(np.float32), offset, order=1, cval=0.0) > 0.99
    return moved, still_valid


def _peak_confidence(ref_f: np.ndarray, mov_f: np.ndarray) -> float:
    """One minus highest side lobe / peak of the phase correlation surface, in 0..1."""
    product = ref_f * mov_f.conj()
    product /= np.maximum(np.abs(product), 1e-12)
    surface = scipy.fft.ifft2(product).real
    peak_at = np.unravel_index(np.argmax(surface), surface.shape)
    peak = surface[peak_at]
    if peak <= 0:
        return 0.0
    centred = np.roll(surface, (-peak_at[0], -peak_at[1]), axis=(0, 1))
    near = np.arange(-_PEAK_RADIUS, _PEAK_RADIUS + 1)
    centred[np.ix_(near % surface.shape[0], near % surface.shape[1])] = -np.inf
    return float(np.clip(1.0 - centred.max() / peak, 0.0, 1.0))
