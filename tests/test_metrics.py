"""Pixel and object scores of change masks: known answers and agreement with score_masks.py."""

import importlib.util
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from detect.metrics import Score, score_mask
from errors import InputError

SCORER = Path(__file__).resolve().parents[2] / "shared" / "tools" / "score_masks.py"


def _mask(shape, *boxes):
    out = np.zeros(shape, bool)
    for r0, r1, c0, c1 in boxes:
        out[r0:r1, c0:c1] = True
    return out


def test_known_answer():
    label = _mask((40, 40), (0, 10, 0, 10), (20, 30, 20, 30))  # two 100 px objects
    # 60 % of the first label object, nothing of the second; a 40 px false object; a 4 px speck
    predicted = _mask((40, 40), (0, 6, 0, 10), (34, 38, 0, 10), (36, 38, 30, 32))
    s = score_mask(label, predicted)
    assert (s.tp, s.fp, s.fn) == (60, 44, 140)
    assert (s.found, s.label_objects) == (1, 2)
    assert (s.correct, s.predicted_objects) == (1, 2)  # the speck is below 20 px
    assert s.pixel_precision == pytest.approx(60 / 104)
    assert s.pixel_recall == pytest.approx(60 / 200)
    assert s.pixel_iou == pytest.approx(60 / 244)
    assert s.object_precision == 0.5 and s.object_recall == 0.5 and s.object_f1 == 0.5


def test_half_covered_counts_and_just_under_does_not():
    label = _mask((10, 40), (0, 10, 0, 4))  # 40 px
    assert score_mask(label, _mask((10, 40), (0, 5, 0, 4))).found == 1  # exactly 50 %
    assert score_mask(label, _mask((10, 40), (0, 5, 0, 3), (5, 6, 0, 3))).found == 0  # 45 %


def test_objects_are_eight_connected():
    diagonal = np.eye(30, dtype=bool)  # one 30 px object through its corners
    s = score_mask(diagonal, diagonal)
    assert s.label_objects == 1 and s.predicted_objects == 1 and s.found == 1


def test_empty_masks_and_pooling():
    empty = score_mask(np.zeros((8, 8)), np.zeros((8, 8)))
    assert empty == Score() and empty.pixel_f1 == 0.0 and empty.object_f1 == 0.0
    a = score_mask(_mask((20, 20), (0, 5, 0, 5)), _mask((20, 20), (0, 5, 0, 5)))
    b = score_mask(_mask((20, 20), (0, 5, 0, 5)), np.zeros((20, 20)))
    pooled = a + b
    assert (pooled.tp, pooled.fn, pooled.label_objects, pooled.found) == (25, 25, 2, 1)
    assert pooled.pixel_recall == 0.5


def test_mismatched_shapes_are_refused():
    with pytest.raises(InputError, match="give two"):
        score_mask(np.zeros((4, 4)), np.zeros((4, 5)))


@pytest.mark.skipif(not SCORER.exists(), reason="shared/tools/score_masks.py is not there")
def test_agrees_with_score_masks(tmp_path):
    spec = importlib.util.spec_from_file_location("score_masks", SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(3)
    labels, preds = tmp_path / "label", tmp_path / "pred"
    labels.mkdir()
    preds.mkdir()
    total = Score()
    for i in range(4):
        label = ndi.gaussian_filter(rng.random((64, 64)), 3) > 0.52
        pred = ndi.gaussian_filter(rng.random((64, 64)), 2) > 0.51
        pred |= ndi.binary_erosion(label, iterations=i % 3)
        Image.fromarray(np.where(label, 255, 0).astype(np.uint8)).save(labels / f"p{i}.png")
        Image.fromarray(np.where(pred, 255, 0).astype(np.uint8)).save(preds / f"p{i}.png")
        total += score_mask(label, pred)
    with redirect_stdout(io.StringIO()) as out:
        module.main(str(labels), str(preds))
    expected = json.loads(out.getvalue())
    mine = total.summary()
    for key in ("gt_objects", "pred_objects"):
        assert mine[key] == expected[key]
    for key, value in expected.items():
        if key not in ("gt_objects", "pred_objects", "missing_predictions"):
            assert round(mine[key], 4) == pytest.approx(value, abs=1e-4), key
