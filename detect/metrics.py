"""Accuracy of a change mask against a label mask: pixel and object precision, recall, F1, IoU.

The rules are those of the project's scorer (``shared/tools/score_masks.py``), so that figures
from ``tuban evaluate`` and from the benchmarks agree with it:

* pixel counts (true / false positives, false negatives) are summed over images before the
  ratios are taken;
* objects are 8-connected components of at least ``min_px`` pixels (smaller ones are ignored,
  but their pixels still count for the pixel figures and as overlap);
* a label object is **found** when at least half of its pixels are predicted change;
* a predicted object is **correct** when at least half of its pixels are labelled change.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from errors import InputError

__all__ = ["MIN_OBJECT_PX", "Score", "score_mask"]

#: Smallest object (pixels) the object figures count, as in ``score_masks.py``.
MIN_OBJECT_PX = 20
#: Share of an object's pixels that must be covered by the other mask.
_OVERLAP = 0.5
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Score:
    """Pixel and object counts of one or more masks; add two to pool them.

    Attributes
    ----------
    tp, fp, fn : int
        Pixels predicted and labelled, predicted only, labelled only.
    found, label_objects : int
        Label objects at least half predicted, and all label objects.
    correct, predicted_objects : int
        Predicted objects at least half labelled, and all predicted objects.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    found: int = 0
    label_objects: int = 0
    correct: int = 0
    predicted_objects: int = 0

    def __add__(self, other: Score) -> Score:
        return Score(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def pixel_precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def pixel_recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def pixel_f1(self) -> float:
        return _f1(self.pixel_precision, self.pixel_recall)

    @property
    def pixel_iou(self) -> float:
        return self.tp / max(self.tp + self.fp + self.fn, 1)

    @property
    def object_precision(self) -> float:
        return self.correct / max(self.predicted_objects, 1)

    @property
    def object_recall(self) -> float:
        return self.found / max(self.label_objects, 1)

    @property
    def object_f1(self) -> float:
        return _f1(self.object_precision, self.object_recall)

    def summary(self) -> dict[str, float | int]:
        """The figures ``score_masks.py`` prints (unrounded): pixel P/R/F1/IoU, object P/R/F1
        and the object counts ``gt_objects`` and ``pred_objects``."""
        return {
            "pixel_precision": self.pixel_precision,
            "pixel_recall": self.pixel_recall,
            "pixel_f1": self.pixel_f1,
            "pixel_iou": self.pixel_iou,
            "object_precision": self.object_precision,
            "object_recall": self.object_recall,
            "object_f1": self.object_f1,
            "gt_objects": self.label_objects,
            "pred_objects": self.predicted_objects,
        }


def score_mask(label: np.ndarray, predicted: np.ndarray, *, min_px: int = MIN_OBJECT_PX) -> Score:
    """Count agreement between a label mask and a predicted mask of one image.

    Parameters
    ----------
    label, predicted : ndarray, shape (h, w)
        Change where > 0 (bool, 0/1 or 0/255).
    min_px : int, keyword-only
        Smallest 8-connected object (pixels) counted by the object figures.

    Returns
    -------
    Score

    Raises
    ------
    errors.InputError
        The masks differ in shape.
    """
    label, predicted = np.asarray(label) > 0, np.asarray(predicted) > 0
    if label.shape != predicted.shape or label.ndim != 2:
        raise InputError(
            f"predicted mask is {predicted.shape} but the label is {label.shape}; "
            "give two (rows, cols) masks of the same image"
        )
    found, label_objects = _covered(label, predicted, min_px)
    correct, predicted_objects = _covered(predicted, label, min_px)
    return Score(
        tp=int(np.count_nonzero(label & predicted)),
        fp=int(np.count_nonzero(predicted & ~label)),
        fn=int(np.count_nonzero(label & ~predicted)),
        found=found,
        label_objects=label_objects,
        correct=correct,
        predicted_objects=predicted_objects,
    )


def _covered(mask: np.ndarray, other: np.ndarray, min_px: int) -> tuple[int, int]:
    """(objects of ``mask`` at least half covered by ``other``, objects of ``mask``)."""
    labels, n = ndi.label(mask, structure=_EIGHT)
    if n == 0:
        return 0, 0
    size = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    hit = np.bincount(labels.ravel(), weights=other.ravel(), minlength=n + 1)[1:]
    counted = size >= min_px
    return int(np.count_nonzero(counted & (hit >= _OVERLAP * size))), int(counted.sum())


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / max(precision + recall, 1e-9)
