"""Sub-pixel co-registration of two epochs by phase correlation.

Orthomosaics and satellite scenes of different quarters are typically off by a few pixels.
:func:`measure_shift` measures the translation of one epoch's bands against another's by phase
correlation (:func:`estimate_shift`) of gradient images (:func:`registration_image`, which do
not care about gain and offset between epochs); :func:`apply_shift` moves the later epoch onto
the earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage as ndi
from skimage.registration import phase_cross_correlation

from .sampling import sampled

__all__ = [
    "Shift",
    "apply_shift",
    "estimate_shift",
    "gradient_magnitude",
    "measure_shift",
    "registration_image",
]

#: Radius (px) around the correlation peak that belongs to the peak, not to the side lobes.
_PEAK_RADIUS = 3
#: Side (px) of the window a shift is measured on.
_WINDOW = 512


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


def measure_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    upsample_factor: int = 20,
) -> Shift:
    """Measure the translation of one epoch's bands relative to another's.

    Tiles larger than ``_WINDOW`` px are measured on the ``_WINDOW`` x ``_WINDOW`` window
    centred on their valid pixels: a translation is the same everywhere on a tile, and the
    window holds most of what the tapered tile would weigh anyway. Both windows become
    :func:`registration_image` s and go to :func:`estimate_shift`.

    Parameters
    ----------
    reference, moving : ndarray of float32, shape (n, h, w)
        The same bands of two epochs (invalid pixels filled with finite values).
    valid : ndarray of bool, shape (h, w), keyword-only
        Pixels valid in both epochs; None means all.
    upsample_factor : int, keyword-only
        Sub-pixel precision is ``1 / upsample_factor`` px.

    Returns
    -------
    Shift
        Not applied.
    """
    if valid is None:
        valid = np.ones(reference.shape[1:], bool)
    window = _window(valid)
    return estimate_shift(
        registration_image(reference[:, *window], valid[window]),
        registration_image(moving[:, *window], valid[window]),
        upsample_factor=upsample_factor,
    )


def estimate_shift(
    reference: np.ndarray, moving: np.ndarray, *, upsample_factor: int = 20
) -> Shift:
    """Phase-correlate two registration images (see :func:`registration_image`).

    Parameters
    ----------
    reference, moving : ndarray of float32, shape (h, w)
        Edge images of the two epochs.
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


def registration_image(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A gain-free, tapered edge image to phase-correlate.

    Each band is scaled by its robust spread, the bands are averaged, and the gradient magnitude
    of the average is centred on its mean over valid pixels. Invalid pixels and a 2 px
    margin around them are zero; a Hann window times a blurred (9 px box) valid mask tapers the
    result to zero at the tile border and at nodata edges.

    Parameters
    ----------
    data : ndarray of float32, shape (n, h, w)
        Bands of one epoch (invalid pixels already filled with finite values).
    valid : ndarray of bool, shape (h, w)
        Pixels to use; pass the pixels valid in *both* epochs so both images share one support.

    Returns
    -------
    ndarray of float32, shape (h, w)
        Scaled to a largest magnitude of 1 (0 everywhere for a featureless image).
    """
    inner = valid if valid.all() else ndi.binary_erosion(valid, iterations=2)
    h, w = valid.shape
    if not inner.any():
        return np.zeros((h, w), np.float32)
    mean = np.zeros((h, w), np.float32)
    for band in data:
        values = sampled(band, inner)
        low, high = np.percentile(values, [25, 75])
        mean += band * np.float32(1.0 / max(float(high - low), 1e-6))
    edges = gradient_magnitude(mean)
    edges -= edges[inner].mean()
    taper = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    if not inner.all():
        taper *= ndi.uniform_filter(inner.astype(np.float32), 9)
    out = np.where(inner, edges * taper, np.float32(0.0))
    peak = float(np.abs(out).max())
    return out / np.float32(peak) if peak > 0 else out


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude (:func:`numpy.gradient`) of a (h, w) image, float32 (h, w), per pixel."""
    image = image.astype(np.float32, copy=False)
    if min(image.shape) < 2:
        return np.zeros(image.shape, np.float32)
    return np.hypot(*np.gradient(image))


def apply_shift(data: np.ndarray, valid: np.ndarray, shift: Shift) -> tuple[np.ndarray, np.ndarray]:
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
    moved = _bilinear_shift(data, shift.row, shift.col)
    mask = _bilinear_shift(valid[np.newaxis].astype(np.float32), shift.row, shift.col, fill=0.0)
    return moved, mask[0] > 0.99


def _bilinear_shift(
    data: np.ndarray, row: float, col: float, *, fill: float | None = None
) -> np.ndarray:
    """``out[:, i, j] = data[:, i - row, j - col]``, interpolated bilinearly, float32 (n, h, w).

    Pixels whose source lies outside the image repeat the edge, or get ``fill``.
    """
    _, h, w = data.shape
    whole_r, whole_c = int(np.floor(row)), int(np.floor(col))
    frac_r, frac_c = np.float32(row - whole_r), np.float32(col - whole_c)
    # grid[:, i, j] = data[:, i - 1 - whole_r, j - 1 - whole_c], edges repeated: (n, h+1, w+1)
    grid = _edge_window(data.astype(np.float32, copy=False), -1 - whole_r, -1 - whole_c)
    across = grid[:, :, 1:] * (1 - frac_c) + grid[:, :, :-1] * frac_c
    out = across[:, 1:] * (1 - frac_r) + across[:, :-1] * frac_r
    if fill is not None:
        source_r, source_c = np.arange(h) - row, np.arange(w) - col
        out[:, (source_r < 0) | (source_r > h - 1)] = fill
        out[:, :, (source_c < 0) | (source_c > w - 1)] = fill
    return out


def _edge_window(data: np.ndarray, top: int, left: int) -> np.ndarray:
    """``data[:, top:top + h + 1, left:left + w + 1]`` of (n, h, w) ``data``, indexes beyond
    the image clipped to its edge (the edge rows and columns repeat)."""
    _, h, w = data.shape
    pads, cuts = [(0, 0)], [slice(None)]
    for start, size in ((top, h), (left, w)):
        start = int(np.clip(start, -size - 1, size))  # past that, every index clips alike
        before, after = max(-start, 0), max(start + 1, 0)  # indexes short at each end
        pads.append((before, after))
        cuts.append(slice(start + before, start + before + size + 1))
    return np.pad(data, pads, mode="edge")[tuple(cuts)]


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


def _window(valid: np.ndarray) -> tuple[slice, slice]:
    """A ``_WINDOW``-px square (or the whole side) centred on the valid pixels, inside the tile."""
    centre = [
        int(np.mean(np.nonzero(valid.any(axis=1 - a))[0])) if valid.any() else 0 for a in (0, 1)
    ]
    out = []
    for size, mid in zip(valid.shape, centre, strict=True):
        side = min(size, _WINDOW)
        start = int(np.clip(mid - side // 2, 0, size - side))
        out.append(slice(start, start + side))
    return out[0], out[1]
