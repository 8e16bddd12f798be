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

    The normalised cross-power spectrum of the two images is inverted once (real FFTs: the
    images are real) to find the whole-pixel peak and the peak's confidence; the peak is then
    refined to ``1 / upsample_factor`` px by evaluating the same inverse transform on a fine
    grid around it, by matrix products (the method of Guizar-Sicairos et al., 2008, that
    :func:`skimage.registration.phase_cross_correlation` implements, on half the spectrum).

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
    shape = reference.shape
    spectrum = scipy.fft.rfft2(reference) * scipy.fft.rfft2(moving).conj()
    spectrum /= np.maximum(np.abs(spectrum), np.float32(1e-12))
    surface = scipy.fft.irfft2(spectrum, s=shape)
    peak_at = np.unravel_index(np.argmax(surface), shape)
    confidence = _peak_confidence(surface, peak_at)
    # Whole-pixel shift, the far half of each axis wrapped to negative shifts.
    coarse = np.array([p - n if p > n // 2 else p for p, n in zip(peak_at, shape, strict=True)])
    if upsample_factor > 1:
        coarse = coarse + _refine(spectrum, shape, coarse, upsample_factor)
    coarse = np.where(np.array(shape) == 1, 0.0, coarse)  # no shift along a single row or col
    return Shift(float(coarse[0]), float(coarse[1]), confidence)


def _refine(
    spectrum: np.ndarray, shape: tuple[int, int], coarse: np.ndarray, upsample_factor: int
) -> np.ndarray:
    """Sub-pixel offset of the correlation peak from the whole-pixel ``coarse`` (row, col).

    The inverse transform of the half ``spectrum`` (h, w // 2 + 1) is evaluated on a grid
    ``1 / upsample_factor`` px apart spanning 1.5 px around ``coarse``: one matrix product
    per axis. A real surface's spectrum is Hermitian, so the columns of the missing half
    are the conjugates of the ones given: the given ones count twice (the zero and, for an
    even width, the last column once) and the real part is kept.
    """
    size = int(np.ceil(1.5 * upsample_factor))
    steps = (np.arange(size) - size // 2) / upsample_factor
    rows, cols = coarse[0] + steps, coarse[1] + steps
    h, w = shape
    row_freq, col_freq = scipy.fft.fftfreq(h), scipy.fft.rfftfreq(w)
    weight = np.full(col_freq.size, 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    down = np.exp(2j * np.pi * np.outer(rows, row_freq)).astype(np.complex64)
    across = (weight[:, None] * np.exp(2j * np.pi * np.outer(col_freq, cols))).astype(np.complex64)
    fine = (down @ spectrum.astype(np.complex64, copy=False) @ across).real
    best = np.unravel_index(np.argmax(fine), fine.shape)
    return (np.array(best) - size // 2) / upsample_factor


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
    whole = bool(valid.all())
    inner = valid if whole else ndi.binary_erosion(valid, iterations=2)
    h, w = valid.shape
    if not inner.any():
        return np.zeros((h, w), np.float32)
    mean = np.zeros((h, w), np.float32)
    low, high = np.percentile(sampled(data, inner), [25, 75], axis=-1)
    for band, spread in zip(data, high - low, strict=True):
        mean += band * np.float32(1.0 / max(float(spread), 1e-6))
    edges = gradient_magnitude(mean)
    edges -= edges.mean() if whole else edges[inner].mean()
    # The Hann taper, one axis at a time (the window is their outer product).
    edges *= np.hanning(h).astype(np.float32)[:, np.newaxis]
    edges *= np.hanning(w).astype(np.float32)
    if not whole:
        edges *= ndi.uniform_filter(inner.astype(np.float32), 9)
        edges[~inner] = 0.0
    peak = float(np.abs(edges).max())
    return edges / np.float32(peak) if peak > 0 else edges


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Gradient magnitude (:func:`numpy.gradient`) of a (h, w) image, float32 (h, w), per pixel."""
    image = image.astype(np.float32, copy=False)
    if min(image.shape) < 2:
        return np.zeros(image.shape, np.float32)
    rows, cols = np.gradient(image)
    rows *= rows
    rows += cols * cols
    return np.sqrt(rows, out=rows)  # np.hypot, several times faster; layers are within ±1e6


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
    if valid.all():  # every weight sums to one: valid but where the source lies outside
        h, w = valid.shape
        mask = np.ones((h, w), bool)
        mask[_outside(h, shift.row)] = False
        mask[:, _outside(w, shift.col)] = False
        return moved, mask
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
    across = grid[:, :, 1:] * (1 - frac_c)
    across += grid[:, :, :-1] * frac_c
    out = across[:, 1:] * (1 - frac_r)
    out += across[:, :-1] * frac_r
    if fill is not None:
        out[:, _outside(h, row)] = fill
        out[:, :, _outside(w, col)] = fill
    return out


def _outside(size: int, shift: float) -> np.ndarray:
    """Which of ``size`` pixels moved by ``shift`` come from beyond the image, bool (size,)."""
    source = np.arange(size) - shift
    return (source < 0) | (source > size - 1)


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


def _peak_confidence(surface: np.ndarray, peak_at: tuple[int, ...]) -> float:
    """One minus highest side lobe / peak of the phase correlation ``surface``, in 0..1."""
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
