"""The learned change scorer on image pairs: train it, apply it, evaluate it, save and load it.

``tuban train`` featurises every labelled pair of one or more pairs folders (see
:mod:`pipeline.pairs`), draws a class-balanced sample of pixels from each and fits
:func:`detect.learn.fit`; ``tuban predict`` writes the change mask of one pair, with a model or
with the unsupervised detector; ``tuban evaluate`` scores a pairs folder with the rules of
``score_masks.py`` (:mod:`detect.metrics`).

A model file is a pickle of a dict: ``format`` and ``format_version``, the tuban and
scikit-learn versions it was made with, the feature names, scales and training pixel sizes,
the thresholds, the pairs it learned from and the pickled classifier. :func:`load_model` reads
the header first and refuses another format version or scikit-learn version before unpickling
the classifier. Load only model files you trust: unpickling runs code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from detect import DetectParams, change_mask
from detect.learn import FEATURE_SCALES_M, Model, features, fit, learned_mask, training_sample
from detect.metrics import Score, score_mask
from errors import InputError

from .atomic import atomic_path
from .pairs import ImagePair, list_pairs, read_pair, write_mask

#: The installed scikit-learn (imported only to train or load a model: it is slow to import).
_SKLEARN = metadata.version("scikit-learn")

__all__ = [
    "FORMAT_VERSION",
    "SAMPLES_PER_PAIR",
    "Evaluation",
    "Prediction",
    "TrainReport",
    "evaluate",
    "load_model",
    "pair_mask",
    "predict",
    "save_model",
    "train",
]

#: Version of the model file layout and of the features it expects; bump on any change.
FORMAT_VERSION = 1
_FORMAT = "tuban-change-model"
#: Pixels sampled from each training pair.
SAMPLES_PER_PAIR = 10_000


@dataclass(frozen=True)
class TrainReport:
    """What :func:`train` did: the model file, pairs and pixels learned from, pixel sizes."""

    path: Path
    pairs: int
    pixels: int
    change_pixels: int
    pixel_sizes: tuple[float, ...]


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict` wrote: the mask file, its (rows, cols), the share of change
    pixels, the pixel size used and the method (``learned`` or ``unsupervised``)."""

    path: Path
    shape: tuple[int, int]
    change_share: float
    pixel_size: float
    method: str


@dataclass(frozen=True)
class Evaluation:
    """The pooled :class:`detect.metrics.Score` of a pairs folder, one per pair, and the method."""

    score: Score
    pairs: dict[str, Score]
    method: str

    def summary(self) -> dict[str, Any]:
        """The pooled figures (as ``score_masks.py`` prints them), the pair count and method."""
        return {**self.score.summary(), "pairs": len(self.pairs), "method": self.method}


def train(
    pair_dirs: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike,
    samples_per_pair: int = SAMPLES_PER_PAIR,
    seed: int = 0,
    progress: bool = True,
) -> TrainReport:
    """Learn the change scorer from labelled pairs folders and save it.

    Parameters
    ----------
    pair_dirs : sequence of path
        Folders holding ``A/``, ``B/``, ``label/`` (and ``meta.toml``).
    out : path, keyword-only
        Model file to write (atomically).
    samples_per_pair : int, keyword-only
        Pixels drawn from each pair, half of them change where the label has enough.
    seed : int, keyword-only
        Seed of the pixel sampling and of the classifier.
    progress : bool, keyword-only
        Show a progress bar.

    Returns
    -------
    TrainReport

    Raises
    ------
    errors.InputError
        A bad pairs folder or image, or labels without both change and no change.
    """
    files = [f for folder in pair_dirs for f in list_pairs(folder)]
    samples, sizes, names = [], [], ()
    for i, pair_files in enumerate(
        tqdm(files, desc="train", unit="pair", disable=not progress or None)
    ):
        pair = pair_files.read()
        feats = features(pair.before, pair.after, pixel_size=pair.pixel_size)
        samples.append(training_sample(feats, pair.label, n=samples_per_pair, seed=seed + i))
        sizes.append(pair.pixel_size)
        names = feats.names
    model = fit(samples, feature_names=names, pixel_sizes=sizes, seed=seed)
    save_model(model, out, trained_on=[str(f.before.parent.parent / f.name) for f in files])
    change = sum(int(y.sum()) for _, y in samples)
    return TrainReport(
        path=Path(out),
        pairs=len(files),
        pixels=sum(len(y) for _, y in samples),
        change_pixels=change,
        pixel_sizes=model.pixel_sizes,
    )


def predict(
    before: str | os.PathLike,
    after: str | os.PathLike,
    *,
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    pixel_size: float | None = None,
) -> Prediction:
    """Write the change mask of an image pair: single band, 0/255, the input's size.

    Parameters
    ----------
    before, after : path
        PNG, JPEG or GeoTIFF of the same size.
    out : path, keyword-only
        ``.png`` (or another Pillow format), or ``.tif`` for a GeoTIFF on the input's grid.
    model : path, keyword-only, optional
        A model file from :func:`train`; None runs the unsupervised detector.
    pixel_size : float, keyword-only, optional
        Metres per pixel of images that do not carry their own (0.5 when None).

    Returns
    -------
    Prediction
    """
    scorer = load_model(model) if model is not None else None
    pair = read_pair(before, after, pixel_size=pixel_size)
    mask = pair_mask(pair, model=scorer)
    path = write_mask(out, mask, like=pair)
    return Prediction(
        path=path,
        shape=mask.shape,
        change_share=float(mask.mean()) if mask.size else 0.0,
        pixel_size=pair.pixel_size,
        method=_method(scorer),
    )


def evaluate(
    pair_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    progress: bool = True,
) -> Evaluation:
    """Score the change masks of a labelled pairs folder against its labels.

    Parameters
    ----------
    pair_dir : path
        Folder holding ``A/``, ``B/``, ``label/`` (and ``meta.toml``).
    model : path, keyword-only, optional
        A model file; None evaluates the unsupervised detector.
    progress : bool, keyword-only
        Show a progress bar.

    Returns
    -------
    Evaluation
        Pixel counts pooled over the pairs, objects by the 50 % overlap rule.
    """
    scorer = load_model(model) if model is not None else None
    files = list_pairs(pair_dir)
    scores = {}
    for pair_files in tqdm(files, desc="evaluate", unit="pair", disable=not progress or None):
        pair = pair_files.read()
        scores[pair.name] = score_mask(pair.label, pair_mask(pair, model=scorer))
    return Evaluation(score=sum(scores.values(), Score()), pairs=scores, method=_method(scorer))


def pair_mask(
    pair: ImagePair, *, model: Model | None = None, params: DetectParams = DetectParams()
) -> np.ndarray:
    """The change mask of a pair: the model's objects, or the unsupervised detector's.

    Returns
    -------
    ndarray of bool, shape (h, w)
    """
    if model is None:
        return change_mask(pair.before, pair.after, pixel_size=pair.pixel_size, params=params)
    return learned_mask(model, pair.before, pair.after, pixel_size=pair.pixel_size, params=params)


def save_model(model: Model, path: str | os.PathLike, *, trained_on: Sequence[str] = ()) -> Path:
    """Write a model file atomically (see the module docstring for its contents)."""
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "tuban_version": _version("tuban"),
        "sklearn_version": _SKLEARN,
        "feature_names": list(model.feature_names),
        "scales_m": list(model.scales_m),
        "pixel_sizes": list(model.pixel_sizes),
        "threshold": list(model.threshold),
        "open_m": model.open_m,
        "trained_on": list(trained_on),
        "classifier": pickle.dumps(model.classifier, protocol=pickle.HIGHEST_PROTOCOL),
    }
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL))
    return Path(path)


def load_model(path: str | os.PathLike) -> Model:
    """Read a model file written by :func:`save_model`.

    Raises
    ------
    errors.InputError
        The file is missing or not a tuban model, or was written for another format version
        or another scikit-learn version: retrain with ``tuban train``.
    """
    path = Path(path)
    retrain = f"retrain it with `tuban train PAIRS_DIR -o {path}`"
    try:
        header = pickle.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(
            f"model {path} does not exist; train one with `tuban train PAIRS_DIR -o {path}`"
        ) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise InputError(f"{path} is not a tuban model file; {retrain}")
    if header.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} is a format-{header.get('format_version')} model but this tuban reads "
            f"format {FORMAT_VERSION}; {retrain}"
        )
    if header.get("sklearn_version") != _SKLEARN:
        raise InputError(
            f"{path} was trained with scikit-learn {header.get('sklearn_version')} but "
            f"{_SKLEARN} is installed; {retrain}"
        )
    return Model(
        classifier=pickle.loads(header["classifier"]),
        feature_names=tuple(header["feature_names"]),
        scales_m=tuple(header.get("scales_m", FEATURE_SCALES_M)),
        pixel_sizes=tuple(header["pixel_sizes"]),
        threshold=tuple(header["threshold"]),
        open_m=float(header["open_m"]),
    )


def _method(model: Model | None) -> str:
    return "unsupervised" if model is None else "learned"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"
