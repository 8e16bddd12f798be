"""A learned change scorer: per-pixel features of two epochs, a gradient-boosted classifier, and
its probability map made into change objects.

Features are computed on the red, green and blue bands of both epochs, co-registered (as in
:mod:`detect.pairs`) and each stretched to its own 1st-99th percentiles per band, so that sensor
gain, season and haze move them little. Every length is in metres, so 0.3 m and 0.5 m imagery
give the same features for the same ground:

* **change** at Gaussian scales of 0.5, 1, 2, 4 and 8 m: colour-vector distance, signed and
  log-ratio brightness change, chromaticity and saturation change;
* **structure** at the same scales: gradient magnitude and local standard deviation of each
  epoch and their log-ratio (a roof brings edges to bare ground);
* **state** of each epoch at 1 and 4 m: brightness, saturation and chromaticity (what stands
  there before and after);
* **shape** of each epoch: blob response (Laplacian of Gaussian at 2, 4 and 8 m: houses are
  blobs), edge coherence at 1 and 2 m (roofs have straight edges) and the share of dark
  pixels within about 8 m (shadows);
* **context** over 10-20 m (whole buildings): the colour distance relative to the image's
  median, the share of strongly changed pixels and the smoothed colour distance, and the
  brightness change over 16 m;
* **surroundings** at 3, 6 and 12 m in eight compass directions: how each epoch's brightness
  and the colour distance there differ from here (a roof with its shadow on one side, a house
  beside its road). The directions are kept apart, not pooled: within a scene the sun casts
  every shadow the same way, and that pattern is what marks a building;
* **regions** of each epoch: the epoch cut into regions of like colour (Felzenszwalb's graph
  segmentation of its 1 m block means), and per region its area, brightness and spread,
  shape (how well it fills the rectangle of its second moments, elongation, compactness),
  the contrast of its outline, how much changed within it and how the other epoch looked
  there, at two scales of segmentation; and each epoch's brightness less its Gaussian mean
  (σ 3 m) around.
  A new roof is one region of the after epoch, compact and bounded by strong edges, that
  changed as a whole; a field or a building site is not.

:func:`fit` trains a :class:`sklearn.ensemble.HistGradientBoostingClassifier` on pixel samples
(:func:`training_sample`); :func:`probability` maps a pair (classified on a 1 m grid,
interpolated between); :func:`learned_mask` and
:func:`detect_changes_learned` threshold the map with hysteresis, open it, fill holes and drop
objects below the minimum area.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from affine import Affine
from scipy import ndimage as ndi
from skimage.filters import apply_hysteresis_threshold
from skimage.segmentation import felzenszwalb

from errors import InputError

from .align import apply_shift, measure_shift
from .core import (
    TileResult,
    _pixel_size,
    compared,
    coverage_qa,
    cue_maps,
    kept_objects,
    objects_result,
)
from .morphology import fill_holes, opening
from .params import DetectParams
from .scene import Layer, Scene, check_pair, layers

__all__ = [
    "FEATURE_SCALES_M",
    "Features",
    "Model",
    "detect_changes_learned",
    "features",
    "fit",
    "learned_mask",
    "probability",
    "training_sample",
]

#: Gaussian scales (m) of the change and structure features.
FEATURE_SCALES_M: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
#: Scales (m) at which each epoch's own brightness and colour are features.
_STATE_M = (1.0, 4.0)
#: Scales (m) of the Laplacian-of-Gaussian blob features.
_BLOB_M = (2.0, 4.0, 8.0)
#: Scales (m) of the edge coherence features, and their integration scale (m).
_COHERENCE_M = (1.0, 2.0)
_COHERENCE_WINDOW_M = 4.0
#: Neighbourhoods (m, full width) of the context features.
_CONTEXT_M = (10.0, 20.0)
#: Strong change: colour distance this many times the image's median distance.
_STRONG = (2.0, 4.0)
#: Distances (m) of the surroundings features, each looked at after a blur of a quarter of it.
_AROUND_M = (3.0, 6.0, 12.0)
#: Compass directions of the surroundings features (rows grow southward, columns eastward).
_COMPASS = ("e", "se", "s", "sw", "w", "nw", "n", "ne")
#: Felzenszwalb scale(s) of the regions (on the 1 m grid; larger, fewer and bigger regions),
#: and the smallest region (m²).
_REGION_SCALES = (100.0, 250.0)
_REGION_MIN_M2 = 8.0
#: Gaussian blur (px of the 1 m grid) before segmenting.
_REGION_SIGMA = 0.0
#: Share of an epoch's darkest pixels counted as dark (shadow context), and its window (m).
_DARK_SHARE = 10.0
_DARK_M = 8.0
#: Offsets that keep ratios and logarithms finite (stretched units, 0..1 = 1st..99th pct).
_BRIGHT_EPS = 0.02
_EDGE_EPS = 0.005
#: Sampling step (px) for percentiles.
_STEP = 2
#: Pixels classified at a time (bounds the classifier's float64 copy of the features).
_CHUNK = 1 << 16
#: Spacing (m) of the grid the classifier is evaluated on; the probability is interpolated
#: linearly between. The features are blurred by at least half a metre, so the map varies
#: little within a metre; classifying (and keeping the features of) every pixel of 0.5 m
#: imagery would cost four times as much.
_PREDICT_M = 1.0
#: Label pixels this close (px) to a label edge are not sampled (outlines are uncertain).
_EDGE_PX = 1
#: Hyper-parameters of the classifier: shallow trees on a random third of the features per
#: split generalise from a few images to imagery of another place.
_CLASSIFIER = dict(
    max_depth=4,
    max_iter=150,
    learning_rate=0.1,
    max_features=0.3,
    min_samples_leaf=500,
    l2_regularization=1.0,
)
_RGB = ("red", "green", "blue")


class Features(NamedTuple):
    """Per-pixel features of a pair.

    ``names`` (k,), ``values`` float32 (k, h, w), ``valid`` bool (h, w): pixels with data in
    both epochs after co-registration.
    """

    names: tuple[str, ...]
    values: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, eq=False)
class Model:
    """A trained change scorer and how to turn its probabilities into objects.

    Attributes
    ----------
    classifier : sklearn classifier
        Fitted, with ``predict_proba`` over ``feature_names``; class 1 is change.
    feature_names : tuple of str
        The features it was trained on, in order (see :func:`features`).
    scales_m : tuple of float
        Gaussian scales (m) of the change features.
    pixel_sizes : tuple of float
        Pixel sizes (m) of the training pairs.
    threshold : tuple of float
        ``(low, high)`` hysteresis thresholds on the probability: objects grow over pixels
        above ``low`` from seeds above ``high``.
    open_m : float
        Radius (m) of the opening applied to the thresholded map.
    """

    classifier: Any
    feature_names: tuple[str, ...]
    scales_m: tuple[float, ...] = FEATURE_SCALES_M
    pixel_sizes: tuple[float, ...] = ()
    threshold: tuple[float, float] = (0.5, 0.7)
    open_m: float = 1.5


def features(
    before: Scene, after: Scene, *, pixel_size: float, params: DetectParams = DetectParams()
) -> Features:
    """Per-pixel features of two epochs (see the module docstring).

    Parameters
    ----------
    before, after : Scene
        Both with red, green and blue bands: ``drone`` layers, or ``satellite`` layers naming
        them (a drone pair is preferred when both epochs have one).
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only
        Co-registration limits (``max_shift_m``, ``min_shift_confidence``).

    Returns
    -------
    Features

    Raises
    ------
    errors.InputError
        Malformed scenes, epochs of different shapes, no red, green and blue bands in both
        epochs, or a pixel size that is not positive.
    """
    names, planes, valid = _planes(before, after, pixel_size, params)
    return Features(names, np.stack(planes), valid)


def _planes(
    before: Scene, after: Scene, pixel_size: float, params: DetectParams, *, step: int = 1
) -> tuple[tuple[str, ...], list[np.ndarray], np.ndarray]:
    """:func:`features` as a list of float32 planes, not stacked into one array, and the
    (h, w) valid mask. With ``step`` > 1 a plane is kept only on the grid of every ``step``-th
    row and column (and the last, see :func:`_grid`) as soon as it is made, so that the planes
    of a tile take a ``step``² share of the memory."""
    if not pixel_size > 0:
        raise InputError(
            f"pixel size {pixel_size} is not positive; give metres per pixel, e.g. 0.5"
        )
    b, a, valid = _prepare(before, after, pixel_size, params)
    rows, cols = (_grid(n, step) for n in valid.shape)
    at = np.ix_(rows, cols)
    found: dict[str, np.ndarray] = {}

    def keep(group: Iterable[tuple[str, np.ndarray]]) -> None:
        for name, plane in group:  # whole planes cut to the grid; those made there as they are
            whole = step > 1 and plane.shape == valid.shape
            found[name] = np.asarray(plane[at] if whole else plane, np.float32)

    lum_b, lum_a = b.mean(axis=0), a.mean(axis=0)
    distance = np.zeros(0)
    for scale in FEATURE_SCALES_M:
        group = _scale_features(b, a, lum_b, lum_a, scale, pixel_size, at if step > 1 else None)
        distance = group.get("colour_distance_1m", distance)
        keep(group.items())
    keep(_shape_features(lum_b, lum_a, valid, pixel_size).items())
    keep(_context_features(distance, lum_a - lum_b, valid, pixel_size).items())
    keep(_surroundings(lum_b, lum_a, distance, pixel_size, (rows, cols)))
    keep(_region_features(b, a, pixel_size, (rows, cols)).items())
    return tuple(found), list(found.values()), valid


def _scale_features(
    b: np.ndarray,
    a: np.ndarray,
    lum_b: np.ndarray,
    lum_a: np.ndarray,
    scale: float,
    pixel_size: float,
    grid: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Change, structure and (at the state scales) each epoch's colour, blurred by ``scale`` m.

    With ``grid`` (``numpy.ix_`` rows and columns) all but the colour distance are made only
    there: what follows the blurs is per pixel."""
    sigma = scale / pixel_size
    sb = np.stack([_blur(band, sigma) for band in b])
    sa = np.stack([_blur(band, sigma) for band in a])
    distance = np.sqrt(((sa - sb) ** 2).sum(axis=0))  # whole: the context features blur it
    mean_b, mean_a = sb.mean(axis=0), sa.mean(axis=0)
    grad_b, grad_a = _gradient(mean_b, sigma), _gradient(mean_a, sigma)
    square_b, square_a = _blur(lum_b * lum_b, sigma), _blur(lum_a * lum_a, sigma)
    if grid is not None:
        picked = (Ellipsis, *grid)
        sb, sa, mean_b, mean_a = sb[picked], sa[picked], mean_b[picked], mean_a[picked]
        grad_b, grad_a, square_b, square_a = (
            x[picked] for x in (grad_b, grad_a, square_b, square_a)
        )
    total_b = np.abs(sb).sum(axis=0) + _BRIGHT_EPS
    total_a = np.abs(sa).sum(axis=0) + _BRIGHT_EPS
    sat_b, sat_a = _saturation(sb), _saturation(sa)
    std_b, std_a = _local_std(square_b, mean_b), _local_std(square_a, mean_a)
    at = f"{scale:g}m"
    out = {
        f"colour_distance_{at}": distance,
        f"brightness_change_{at}": mean_a - mean_b,
        f"brightness_log_ratio_{at}": _log_ratio(mean_a, mean_b, _BRIGHT_EPS),
        **{
            f"{band}_share_change_{at}": sa[k] / total_a - sb[k] / total_b
            for k, band in enumerate(_RGB)
        },
        f"saturation_change_{at}": sat_a - sat_b,
        f"gradient_before_{at}": grad_b,
        f"gradient_after_{at}": grad_a,
        f"gradient_log_ratio_{at}": _log_ratio(grad_a, grad_b, _EDGE_EPS),
        f"std_before_{at}": std_b,
        f"std_after_{at}": std_a,
        f"std_log_ratio_{at}": _log_ratio(std_a, std_b, _EDGE_EPS),
    }
    if scale in _STATE_M:
        for epoch, mean, sat, smooth, total in (
            ("before", mean_b, sat_b, sb, total_b),
            ("after", mean_a, sat_a, sa, total_a),
        ):
            out[f"brightness_{epoch}_{at}"] = mean
            out[f"saturation_{epoch}_{at}"] = sat
            for k, band in enumerate(_RGB):
                out[f"{band}_share_{epoch}_{at}"] = smooth[k] / total
    return out


def _shape_features(
    lum_b: np.ndarray, lum_a: np.ndarray, valid: np.ndarray, pixel_size: float
) -> dict[str, np.ndarray]:
    """Blobs, straight edges and dark surroundings (shadows) of each epoch's brightness."""
    out = {}
    for scale in _BLOB_M:
        out[f"blob_before_{scale:g}m"] = _blob(lum_b, scale / pixel_size)
        out[f"blob_after_{scale:g}m"] = _blob(lum_a, scale / pixel_size)
    window = _COHERENCE_WINDOW_M / pixel_size
    for scale in _COHERENCE_M:
        coh_b = _coherence(lum_b, scale / pixel_size, window)
        coh_a = _coherence(lum_a, scale / pixel_size, window)
        out[f"coherence_before_{scale:g}m"] = coh_b
        out[f"coherence_after_{scale:g}m"] = coh_a
        out[f"coherence_change_{scale:g}m"] = coh_a - coh_b
    for epoch, lum in (("before", lum_b), ("after", lum_a)):
        dark = (lum < _percentile(lum, valid, _DARK_SHARE)).astype(np.float32)
        out[f"dark_share_{epoch}_{_DARK_M:g}m"] = _blur(dark, _DARK_M / 2 / pixel_size)
    return out


def _context_features(
    distance: np.ndarray, brightening: np.ndarray, valid: np.ndarray, pixel_size: float
) -> dict[str, np.ndarray]:
    """How much changed around a pixel, over whole buildings (10-20 m)."""
    typical = _percentile(distance, valid, 50) + 1e-4
    out = {"colour_distance_relative_1m": distance / typical}
    for width in _CONTEXT_M:
        sigma = width / 2 / pixel_size
        for strong in _STRONG:
            share = (distance > strong * typical).astype(np.float32)
            out[f"strong_change_share_{strong:g}x_{width:g}m"] = _blur(share, sigma)
        out[f"colour_distance_context_{width:g}m"] = _blur(distance, sigma)
    out["brightness_change_context_16m"] = _blur(brightening, 8.0 / pixel_size)
    return out


def _surroundings(
    lum_b: np.ndarray,
    lum_a: np.ndarray,
    distance: np.ndarray,
    pixel_size: float,
    at: tuple[np.ndarray, np.ndarray],
) -> Iterator[tuple[str, np.ndarray]]:
    """Brightness of each epoch and colour distance some metres away in each compass direction,
    less their value here (both blurred by a quarter of the distance), mirrored at the image's
    edges; (name, plane) one at a time, on the rows and columns ``at``."""
    rows, cols = at
    h, w = lum_b.shape
    for name, image in (("before", lum_b), ("after", lum_a), ("change", distance)):
        for reach in _AROUND_M:
            steps = reach / pixel_size
            smooth = _blur(image, steps / 4)
            here = smooth[np.ix_(rows, cols)]
            for k, direction in enumerate(_COMPASS):
                angle = k * np.pi / 4
                down, right = round(steps * np.sin(angle)), round(steps * np.cos(angle))
                away = smooth[np.ix_(_mirror(rows + down, h), _mirror(cols + right, w))]
                yield f"{name}_{direction}_{reach:g}m", away - here


def _region_features(
    b: np.ndarray, a: np.ndarray, pixel_size: float, at: tuple[np.ndarray, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-region figures of each epoch (see the module docstring), on the rows and columns
    ``at``.

    Both epochs are averaged over blocks of about ``_PREDICT_M`` (every pixel of imagery of a
    metre or coarser) and each is segmented there, so that the regions of one place do not
    depend on the pixel size, nor on which pixels are classified: a pixel takes the figures of
    the region its block belongs to."""
    k = _block(pixel_size)
    small_b, small_a = _block_mean(b, k), _block_mean(a, k)
    distance = np.sqrt(((small_a - small_b) ** 2).sum(axis=0))
    cell_m2 = (k * pixel_size) ** 2
    min_size = max(2, int(round(_REGION_MIN_M2 / cell_m2)))
    rows, cols = (np.minimum(x // k, n - 1) for x, n in zip(at, distance.shape, strict=True))
    out: dict[str, np.ndarray] = {}
    for epoch, image, other in (("after", small_a, small_b), ("before", small_b, small_a)):
        lum, lum_other = image.mean(axis=0), other.mean(axis=0)
        rgb = np.clip(np.moveaxis(image, 0, -1), 0.0, 1.0)
        for scale in _REGION_SCALES:
            labels = felzenszwalb(
                rgb,
                scale=scale,
                sigma=_REGION_SIGMA,
                min_size=min_size,
            )
            figures = _region_figures(labels, lum, lum_other, distance, cell_m2)
            picked = labels[np.ix_(rows, cols)]
            name = f"region_{epoch}" + (f"_{scale:g}" if len(_REGION_SCALES) > 1 else "")
            out.update((f"{name}_{key}", value[picked]) for key, value in figures.items())
        around = lum - _blur(lum, 3.0 / (k * pixel_size))
        out[f"brightness_around_{epoch}_3m"] = around[np.ix_(rows, cols)]
    return out


def _region_figures(
    labels: np.ndarray,
    lum: np.ndarray,
    lum_other: np.ndarray,
    distance: np.ndarray,
    cell_m2: float,
) -> dict[str, np.ndarray]:
    """Figures of every region of ``labels`` (0..n-1), float32 (n,) each, by label sums."""
    flat = labels.ravel()
    n = int(flat.max()) + 1
    count = np.bincount(flat, minlength=n).astype(np.float64)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(flat, values.ravel().astype(np.float64), minlength=n) / count

    brightness, change, other = mean(lum), mean(distance), mean(lum_other)
    spread = np.sqrt(np.maximum(mean(lum * lum) - brightness**2, 0.0))
    # second moments of each region's pixel positions: a rectangle of sides L, W has
    # eigenvalues L²/12 and W²/12, so count / (12 sqrt(l1 l2)) is 1 for a rectangle
    r, c = np.indices(labels.shape, dtype=np.float64)
    mr, mc = mean(r), mean(c)
    vrr, vcc, vrc = mean(r * r) - mr**2, mean(c * c) - mc**2, mean(r * c) - mr * mc
    half, det = (vrr + vcc) / 2, vrr * vcc - vrc**2
    root = np.sqrt(np.maximum(half**2 - det, 0.0))
    # (a single pixel is a unit square: 1/12 at least)
    major, minor = np.maximum(half + root, 1.0 / 12), np.maximum(half - root, 1.0 / 12)
    outline = np.zeros(labels.shape, bool)
    outline[1:] |= labels[1:] != labels[:-1]
    outline[:-1] |= labels[:-1] != labels[1:]
    outline[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    outline[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    perimeter = np.bincount(flat, outline.ravel(), minlength=n)
    gradient = np.hypot(_derivative(lum, 0), _derivative(lum, 1))
    edge = np.bincount(flat, (gradient * outline).ravel(), minlength=n) / np.maximum(perimeter, 1)
    figures = {
        "area_log": np.log(count * cell_m2),
        "brightness": brightness,
        "spread": spread,
        "fill": count / (12 * np.sqrt(major * minor)),
        "elongation": np.sqrt(major / minor),
        "compactness": 4 * np.pi * count / np.maximum(perimeter, 1) ** 2,
        "edge": edge,
        "edge_contrast": edge / (mean(gradient) + 1e-3),
        "change": change,
        "change_spread": np.sqrt(np.maximum(mean(distance * distance) - change**2, 0.0)),
        "other_spread": np.sqrt(np.maximum(mean(lum_other * lum_other) - other**2, 0.0)),
        "brightness_change": brightness - other,
    }
    return {key: value.astype(np.float32) for key, value in figures.items()}


def _block(pixel_size: float) -> int:
    """Pixels per side of the blocks about ``_PREDICT_M`` wide (1 for a metre or coarser)."""
    return max(1, int(round(_PREDICT_M / pixel_size)))


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    """Means of ``k`` × ``k`` blocks of a (bands, h, w) image, the last ones padded by their
    edge; float32."""
    if k == 1:
        return image.astype(np.float32, copy=False)
    bands, h, w = image.shape
    padded = np.pad(image, ((0, 0), (0, -h % k), (0, -w % k)), mode="edge")
    return padded.reshape(bands, padded.shape[1] // k, k, -1, k).mean(axis=(2, 4))


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Pixel indexes beyond 0..size-1 mirrored about the edge pixels (``numpy.pad``'s
    ``reflect``: -1 -> 1, size -> size - 2)."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index < size, index, period - index)


def training_sample(
    feats: Features, label: np.ndarray, *, n: int = 10_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced random sample of a pair's pixels.

    Up to ``n / 2`` change and the rest no-change pixels, drawn among valid pixels away from
    label edges (outlines drawn by hand are uncertain by a pixel).

    Parameters
    ----------
    feats : Features
    label : ndarray of bool, shape (h, w)
        Labelled change.
    n : int, keyword-only
        Pixels drawn (fewer when the pair has fewer).
    seed : int, keyword-only
        Random seed.

    Returns
    -------
    X : ndarray of float32, shape (m, k)
    y : ndarray of bool, shape (m,)
    """
    label = np.asarray(label, bool)
    if label.shape != feats.valid.shape:
        raise InputError(
            f"label covers {label.shape} pixels but the images {feats.valid.shape}; "
            "give a label of the images' size"
        )
    edge = ndi.binary_dilation(label, iterations=_EDGE_PX) & ~ndi.binary_erosion(
        label, iterations=_EDGE_PX
    )
    usable = feats.valid & ~edge
    rng = np.random.default_rng(seed)
    change = np.flatnonzero(usable & label)
    still = np.flatnonzero(usable & ~label)
    n_change = min(change.size, n // 2)
    n_still = min(still.size, n - n_change)
    picked = np.concatenate(
        [rng.choice(change, n_change, replace=False), rng.choice(still, n_still, replace=False)]
    )
    flat = feats.values.reshape(feats.values.shape[0], -1)
    return flat[:, picked].T.copy(), label.ravel()[picked]


def fit(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    feature_names: Sequence[str],
    pixel_sizes: Sequence[float],
    seed: int = 0,
) -> Model:
    """Train the scorer on pixel samples of labelled pairs.

    Parameters
    ----------
    samples : sequence of (X, y)
        One :func:`training_sample` per pair; X float32 (m, k), y bool (m,).
    feature_names : sequence of str, keyword-only
        Names of the k features (``Features.names``).
    pixel_sizes : sequence of float, keyword-only
        Pixel sizes (m) of the pairs, recorded in the model.
    seed : int, keyword-only
        Random state of the classifier.

    Returns
    -------
    Model

    Raises
    ------
    errors.InputError
        No sample, or samples of one class only.
    """
    y = np.concatenate([t for _, t in samples]) if samples else np.zeros(0, bool)
    if y.size == 0:
        raise InputError("no labelled pixels to learn from; give at least one labelled pair")
    if y.all() or not y.any():
        raise InputError(
            "the labels hold only "
            + ("change" if y.any() else "no change")
            + "; give pairs whose labels mark both change and no change"
        )
    from sklearn.ensemble import HistGradientBoostingClassifier  # slow to import; only to train

    classifier = HistGradientBoostingClassifier(**_CLASSIFIER, random_state=seed)
    classifier.fit(np.concatenate([x for x, _ in samples]), y)
    return Model(
        classifier=classifier,
        feature_names=tuple(feature_names),
        pixel_sizes=tuple(sorted({round(float(p), 4) for p in pixel_sizes})),
    )


def probability(
    model: Model,
    before: Scene,
    after: Scene,
    *,
    pixel_size: float,
    params: DetectParams = DetectParams(),
) -> np.ndarray:
    """The model's probability of change at every pixel.

    The classifier runs on a grid about ``_PREDICT_M`` (1 m) apart, every pixel of imagery of
    a metre or coarser, and the probability is interpolated linearly between.

    Parameters
    ----------
    model : Model
    before, after : Scene
        See :func:`features`.
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only

    Returns
    -------
    ndarray of float32, shape (h, w)
        0..1; 0 where either epoch has no data.

    Raises
    ------
    errors.InputError
        As :func:`features`, or a model trained on other features.
    """
    # Classified on a grid about _PREDICT_M apart, the features kept only there, a band of
    # the grid's rows at a time (the classifier takes its float64 copy of one band only).
    step = _block(pixel_size)
    names, planes, valid = _planes(before, after, pixel_size, params, step=step)
    if names != model.feature_names:
        raise InputError(
            f"the model was trained on {len(model.feature_names)} other features than this "
            f"version computes ({len(names)}); retrain it with `tuban train`"
        )
    rows_at, cols_at = (_grid(n, step) for n in valid.shape)
    per_band = max(1, _CHUNK // cols_at.size)
    coarse = np.zeros((rows_at.size, cols_at.size), np.float32)
    # One float64 buffer for every band (a fresh one each time costs as much as filling it).
    buffer = np.empty((len(planes), min(per_band, rows_at.size) * cols_at.size))
    for top in range(0, rows_at.size, per_band):
        band = slice(top, min(top + per_band, rows_at.size))
        block = buffer[:, : (band.stop - top) * cols_at.size]
        np.stack([plane[band].ravel() for plane in planes], out=block)
        # (k, m) transposed: the classifier bins features a column at a time, several
        # times faster in this (Fortran) order than in rows of pixels.
        coarse[band] = model.classifier.predict_proba(block.T)[:, 1].reshape(-1, cols_at.size)
    coarse[~valid[np.ix_(rows_at, cols_at)]] = 0.0
    if step > 1:
        coarse = _interpolated(coarse, rows_at, valid.shape[0], axis=0)
        coarse = _interpolated(coarse, cols_at, valid.shape[1], axis=1)
    return np.where(valid, coarse, np.float32(0.0))


def _grid(size: int, step: int) -> np.ndarray:
    """Every ``step``-th of ``size`` pixels, and the last one."""
    return np.unique(np.r_[np.arange(0, size, step), size - 1])


def _interpolated(values: np.ndarray, at: np.ndarray, size: int, *, axis: int) -> np.ndarray:
    """``values`` known at the increasing pixels ``at`` along ``axis`` (the first at 0, the last
    at ``size - 1``), linearly interpolated to every pixel, float32."""
    if at.size == 1:
        return np.repeat(values, size, axis=axis)
    x = np.arange(size)
    i = np.clip(np.searchsorted(at, x, side="right") - 1, 0, at.size - 2)
    t = ((x - at[i]) / (at[i + 1] - at[i])).astype(np.float32)
    shape = [1, 1]
    shape[axis] = size
    t = t.reshape(shape)
    return np.take(values, i, axis=axis) * (1 - t) + np.take(values, i + 1, axis=axis) * t


def learned_mask(
    model: Model,
    before: Scene,
    after: Scene,
    *,
    pixel_size: float,
    params: DetectParams = DetectParams(),
) -> np.ndarray:
    """The change objects the model finds in a plain image pair, as a mask.

    Parameters
    ----------
    model : Model
    before, after : Scene
    pixel_size : float, keyword-only
        Metres per pixel.
    params : DetectParams, keyword-only
        ``min_area_m2`` drops smaller objects.

    Returns
    -------
    ndarray of bool, shape (h, w)
    """
    change = probability(model, before, after, pixel_size=pixel_size, params=params)
    labels, n = _segment(change, model, pixel_size)
    pixels = np.bincount(labels.ravel(), minlength=n + 1)
    keep = pixels * pixel_size**2 >= params.min_area_m2
    keep[0] = False
    return keep[labels]


def detect_changes_learned(
    before: Scene,
    after: Scene,
    *,
    model: Model,
    transform: Affine,
    params: DetectParams = DetectParams(),
    core: tuple[slice, slice] | None = None,
) -> TileResult:
    """:func:`detect.detect_changes` with the model's probability in place of the fused score.

    The cues (:func:`detect.cue_maps`) still describe and type each object and mark the
    pixels not compared (clouds, nodata); an object's ``score`` is its mean probability.

    Parameters
    ----------
    before, after : Scene
    model : Model, keyword-only
    transform : Affine, keyword-only
        Pixel to CRS transform of the haloed tile (north-up; pixel size in metres).
    params : DetectParams, keyword-only
    core : tuple of slice, keyword-only
        (rows, cols) of the tile proper; only objects whose centroid lies in it are returned.
        None keeps every object.

    Returns
    -------
    TileResult
        ``qa`` holds ``scorer`` (``"learned"``), ``valid_fraction`` and ``cloud_fraction``
        (as :func:`detect.detect_changes` reports them).
    """
    pixel_size = _pixel_size(transform)
    rows, cols = check_pair(before, after)
    before, after, transform, core = compared(before, after, transform=transform, core=core)
    change = probability(model, before, after, pixel_size=pixel_size, params=params)
    cues = cue_maps(before, after, pixel_size=pixel_size, params=params)
    cues = replace(cues, score=np.where(cues.valid, change, 0.0).astype(np.float32))
    labels, n = _segment(cues.score, model, pixel_size)
    keep, stats = kept_objects(labels, n, cues, pixel_size=pixel_size, params=params, core=core)
    qa = {"scorer": "learned", **coverage_qa(cues.valid, cues.cloud, size=rows * cols)}
    return objects_result(
        labels, keep, stats, cloud=cues.cloud, transform=transform, params=params, qa=qa
    )


def _prepare(
    before: Scene, after: Scene, pixel_size: float, params: DetectParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both epochs' RGB, the after epoch moved onto the before epoch, each stretched per band
    to its 1st-99th percentiles; float32 (3, h, w) twice and the (h, w) valid mask."""
    check_pair(before, after)
    first, second = _rgb(layers(before)), _rgb(layers(after))
    if first is None or second is None:
        raise InputError(
            "the learned scorer needs red, green and blue bands in both epochs (a drone "
            "orthomosaic, or satellite bands named red, green, blue); map them in the sources"
        )
    b, a = (
        first.data[[first.bands.index(n) for n in _RGB]],
        second.data[[second.bands.index(n) for n in _RGB]],
    )
    valid_after = second.valid
    valid = first.valid & valid_after
    shift = measure_shift(b, a, valid=valid)
    if (
        shift.confidence >= params.min_shift_confidence
        and shift.magnitude <= params.max_shift_m / pixel_size
    ):
        a, valid_after = apply_shift(a, valid_after, shift)
        valid = first.valid & valid_after
    return _stretch(b, valid), _stretch(a, valid), valid


def _rgb(found: dict[str, Layer]) -> Layer | None:
    """The drone layer, else a satellite layer with red, green and blue bands, else None."""
    for kind in ("drone", "satellite"):
        layer = found.get(kind)
        if layer is not None and set(_RGB) <= set(layer.bands):
            return layer
    return None


def _stretch(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each band mapped linearly so that its 1st and 99th percentiles become 0 and 1."""
    out = np.empty_like(data, dtype=np.float32)
    for k, band in enumerate(data):
        low, high = _percentile(band, valid, (1, 99))
        out[k] = (band - np.float32(low)) / np.float32(max(high - low, 1e-6))
    return out


def _percentile(values: np.ndarray, valid: np.ndarray, q: Any) -> Any:
    """Percentile(s) of ``values`` over valid pixels (sampled); 0 when none is valid."""
    picked = values[::_STEP, ::_STEP][valid[::_STEP, ::_STEP]]
    if picked.size == 0:
        picked = values[valid] if valid.any() else np.zeros(1, np.float32)
    return np.percentile(picked, q)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, float32; wide kernels run on a block-averaged copy and are interpolated
    back (bilinear), which keeps the cost flat in ``sigma``."""
    image = image.astype(np.float32, copy=False)
    if sigma <= 4.0:
        return ndi.gaussian_filter(image, sigma, mode="reflect")
    factor = int(sigma // 2)
    h, w = image.shape
    small = _block_mean(image[None], factor)[0]
    # a block mean is itself a blur of variance (factor² - 1) / 12 px²
    rest = np.sqrt(max(sigma**2 - (factor**2 - 1) / 12.0, 0.25)) / factor
    small = ndi.gaussian_filter(small, rest, mode="reflect")
    return _upsample(_upsample(small, factor, h, axis=0), factor, w, axis=1)


def _upsample(small: np.ndarray, factor: int, size: int, *, axis: int) -> np.ndarray:
    """Linear interpolation of block means back to ``size`` pixels along ``axis``; a block's
    mean sits at its centre, ``(i + 0.5) * factor - 0.5`` px."""
    at = (np.arange(size) + 0.5) / factor - 0.5
    first = np.clip(np.floor(at).astype(int), 0, small.shape[axis] - 1)
    second = np.minimum(first + 1, small.shape[axis] - 1)
    weight = np.clip(at - first, 0.0, 1.0).astype(np.float32)
    if axis == 1:
        return small[:, first] * (1 - weight) + small[:, second] * weight
    return small[first] * (1 - weight)[:, None] + small[second] * weight[:, None]


def _gradient(smooth: np.ndarray, sigma: float) -> np.ndarray:
    """Gradient magnitude of an image blurred by ``sigma`` px, per ``sigma`` (scale-normalised,
    so the same ground gives the same value at any pixel size)."""
    rows, cols = _derivative(smooth, 0), _derivative(smooth, 1)
    return np.hypot(rows, cols) * np.float32(sigma)


def _derivative(image: np.ndarray, axis: int) -> np.ndarray:
    """Central difference along ``axis`` (edges repeated), per pixel."""
    return ndi.correlate1d(image, np.array([-0.5, 0.0, 0.5], np.float32), axis=axis, mode="nearest")


def _local_std(square: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """Gaussian-weighted standard deviation of an image from the blurs of its square and of
    itself."""
    return np.sqrt(np.maximum(square - smooth * smooth, 0.0))


def _blob(image: np.ndarray, sigma: float) -> np.ndarray:
    """Scale-normalised Laplacian of Gaussian (negative on bright blobs of about this size)."""
    return ndi.laplace(_blur(image, sigma)) * np.float32(sigma * sigma)


def _coherence(image: np.ndarray, sigma: float, window: float) -> np.ndarray:
    """Coherence of the structure tensor, 0 (no or crossing edges) .. 1 (straight edges)."""
    smooth = _blur(image, max(sigma, 0.7))
    rows, cols = _derivative(smooth, 0), _derivative(smooth, 1)
    jrr, jcc, jrc = (
        _blur(rows * rows, window),
        _blur(cols * cols, window),
        _blur(rows * cols, window),
    )
    spread = np.sqrt((jrr - jcc) ** 2 + 4 * jrc * jrc)
    return spread / (jrr + jcc + 1e-6)


def _saturation(rgb: np.ndarray) -> np.ndarray:
    top = rgb.max(axis=0)
    return (top - rgb.min(axis=0)) / (np.abs(top) + _BRIGHT_EPS)


def _log_ratio(after: np.ndarray, before: np.ndarray, eps: float) -> np.ndarray:
    return np.log((np.maximum(after, 0.0) + eps) / (np.maximum(before, 0.0) + eps))


def _segment(change: np.ndarray, model: Model, pixel_size: float) -> tuple[np.ndarray, int]:
    """Hysteresis threshold, opening and hole filling of a probability map; labels, count."""
    low, high = model.threshold
    mask = apply_hysteresis_threshold(change, low, high)
    radius = int(round(model.open_m / pixel_size))
    if radius:
        mask = opening(mask, radius)
    labels, n = ndi.label(fill_holes(mask))
    return labels.astype(np.int32), int(n)
