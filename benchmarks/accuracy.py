"""Accuracy of change masks on the real labelled pairs: a CVA + Otsu baseline, the unsupervised
default and the learned scorer under two protocols.

Usage: python benchmarks/accuracy.py [--realdata DIR] [--samples N] [--seed S] [--masks DIR]
                                     [--train-without DATASET...] [--per-pair]

Every sub-folder of ``--realdata`` holding ``A/``, ``B/`` and ``label/`` is a dataset (its
``meta.toml`` gives the pixel size, else 0.5 m). Methods:

* ``cva-otsu``: magnitude of the RGB difference vector, thresholded per image by Otsu's method;
* ``unsupervised``: :func:`detect.change_mask` (what ``tuban predict`` does without a model);
* ``learned-cv``: grouped cross-validation: each source image is held out in turn and the
  scorer is trained on every other pair of every dataset. Crops of one source image are one
  group (LEVIR-CD ``test_2_0000_0000`` and ``test_2_0000_0512`` are both ``test_2``; DSIFN-CD
  ``0_2`` is image ``0``; a name without crop offsets, like WHU-CD ``000121``, is its own group);
* ``learned-lodo``: leave one dataset out: trained on the other datasets only (imagery of a kind
  never seen).

Scores follow ``shared/tools/score_masks.py`` (pixels pooled over a dataset's pairs; objects
8-connected, >= 20 px, found / correct at 50 % overlap). ``--masks DIR`` also writes every mask
as ``DIR/<method>/<dataset>/<name>.png`` so that the scorer can check the figures.
``--train-without DATASET`` leaves that dataset's pairs out of every training set (they are
still scored), to measure what its labels add or cost the others. ``--per-pair`` also prints
every pair's pixel F1 by each method.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
from skimage.filters import threshold_otsu

from detect.learn import features, fit, training_sample
from detect.metrics import Score, score_mask
from pipeline.learn import SAMPLES_PER_PAIR, pair_mask
from pipeline.pairs import ImagePair, list_pairs, write_mask

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
METHODS = ("cva-otsu", "unsupervised", "learned-cv", "learned-lodo")
#: Targets of the issue: (method, dataset) -> (figure, at least).
TARGETS = {
    ("learned-cv", "LEVIR-CD"): [("pixel_f1", 0.65), ("object_f1", 0.45)],
    ("learned-cv", "WHU-CD"): [("pixel_f1", 0.50)],
}


def source_of(name: str) -> str:
    """The source image a crop was cut from: ``test_2_0000_0512`` -> ``test_2``, ``0_2`` -> ``0``,
    any other name -> itself."""
    offsets = re.fullmatch(r"(.+?)_\d+_\d+", name)
    if offsets:
        return offsets.group(1)
    index = re.fullmatch(r"(\d+)_\d+", name)
    return index.group(1) if index else name


def cva_otsu(pair: ImagePair) -> np.ndarray:
    """Change vector analysis: |after - before| over the RGB bands, Otsu-thresholded."""
    diff = pair.after.satellite - pair.before.satellite
    magnitude = np.sqrt((diff**2).sum(axis=0))
    if magnitude.max() == magnitude.min():
        return np.zeros(magnitude.shape, bool)
    return magnitude > threshold_otsu(magnitude)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--realdata", type=Path, default=REALDATA)
    ap.add_argument("--samples", type=int, default=SAMPLES_PER_PAIR, help="pixels per pair")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--masks", type=Path, help="also write every mask under this folder")
    ap.add_argument(
        "--train-without",
        nargs="+",
        default=[],
        metavar="DATASET",
        help="leave these datasets out of every training set (still scored)",
    )
    ap.add_argument("--per-pair", action="store_true", help="also print each pair's pixel F1")
    args = ap.parse_args()
    t0 = time.perf_counter()
    datasets = {
        d.name: [f.read() for f in list_pairs(d)]
        for d in sorted(args.realdata.iterdir())
        if all((d / part).is_dir() for part in ("A", "B", "label"))
    }
    if not datasets:
        raise SystemExit(f"{args.realdata}: no folder with A/, B/ and label/")
    unknown = sorted(set(args.train_without) - set(datasets))
    if unknown:
        raise SystemExit(f"--train-without {unknown[0]}: not one of {', '.join(datasets)}")
    items = [(ds, pair) for ds, pairs in datasets.items() for pair in pairs]
    samples, names = [], ()
    for i, (_, pair) in enumerate(items):
        feats = features(pair.before, pair.after, pixel_size=pair.pixel_size)
        samples.append(training_sample(feats, pair.label, n=args.samples, seed=args.seed + i))
        names = feats.names
    t_features = time.perf_counter() - t0

    def held_out(key) -> dict[tuple[str, str], np.ndarray]:
        """Masks of every pair by a model trained on the pairs of other ``key(dataset, pair)``."""
        keys = [key(ds, pair) for ds, pair in items]
        out = {}
        for k in sorted(set(keys)):
            train = [
                i
                for i, other in enumerate(keys)
                if other != k and items[i][0] not in args.train_without
            ]
            model = fit(
                [samples[i] for i in train],
                feature_names=names,
                pixel_sizes=[items[i][1].pixel_size for i in train],
                seed=args.seed,
            )
            for (ds, pair), other in zip(items, keys, strict=True):
                if other == k:
                    out[ds, pair.name] = pair_mask(pair, model=model)
        return out

    masks: dict[str, dict[tuple[str, str], np.ndarray]] = {
        "cva-otsu": {(ds, pair.name): cva_otsu(pair) for ds, pair in items},
        "unsupervised": {(ds, pair.name): pair_mask(pair) for ds, pair in items},
    }
    t0 = time.perf_counter()
    masks["learned-cv"] = held_out(lambda ds, pair: (ds, source_of(pair.name)))
    t_cv = time.perf_counter() - t0
    masks["learned-lodo"] = held_out(lambda ds, pair: ds)
    by_pair = {
        (method, ds, pair.name): score_mask(pair.label, masks[method][ds, pair.name])
        for method in METHODS
        for ds, pairs in datasets.items()
        for pair in pairs
    }
    scores = {
        (method, ds): sum((by_pair[method, ds, pair.name] for pair in datasets[ds]), Score())
        for method in METHODS
        for ds in datasets
    }
    if args.masks:
        for method, method_masks in masks.items():
            for (ds, name), mask in method_masks.items():
                write_mask(args.masks / method / ds / f"{name}.png", mask)
    _print_table(datasets, scores)
    if args.per_pair:
        _print_pairs(datasets, by_pair)
    print()
    print(
        f"features + samples {t_features:.0f} s; grouped CV {t_cv:.0f} s; "
        f"{args.samples} pixels per pair, seed {args.seed}"
        + (f"; trained without {', '.join(args.train_without)}" if args.train_without else "")
    )
    for (method, ds), checks in TARGETS.items():
        if ds not in datasets:
            continue
        s = scores[method, ds].summary()
        print(
            "target "
            + ", ".join(
                f"{method} {ds} {figure} {s[figure]:.3f} >= {goal:.2f}: "
                f"{'met' if s[figure] >= goal else f'short by {goal - s[figure]:.3f}'}"
                for figure, goal in checks
            )
        )
    for ds in datasets:
        lodo, base = scores["learned-lodo", ds].pixel_f1, scores["cva-otsu", ds].pixel_f1
        verdict = "beats" if lodo > base else "does not beat"
        print(f"target learned-lodo {ds} pixel_f1 {lodo:.3f} {verdict} cva-otsu {base:.3f}")
    print(
        "demo (synthetic quarter, object recall / precision of the batch): "
        "python benchmarks/demo_accuracy.py"
    )


def _print_table(
    datasets: dict[str, list[ImagePair]], scores: dict[tuple[str, str], Score]
) -> None:
    print(
        f"{'dataset':<10} {'pairs':>5} {'method':<13} {'pix P':>6} {'pix R':>6} {'pix F1':>6} "
        f"{'IoU':>6} {'obj P':>6} {'obj R':>6} {'obj F1':>6} {'labelled':>8} {'predicted':>9}"
    )
    for ds, pairs in datasets.items():
        for method in METHODS:
            s = scores[method, ds]
            print(
                f"{ds:<10} {len(pairs):>5} {method:<13} {s.pixel_precision:>6.3f} "
                f"{s.pixel_recall:>6.3f} {s.pixel_f1:>6.3f} {s.pixel_iou:>6.3f} "
                f"{s.object_precision:>6.3f} {s.object_recall:>6.3f} {s.object_f1:>6.3f} "
                f"{s.label_objects:>8} {s.predicted_objects:>9}"
            )


def _print_pairs(
    datasets: dict[str, list[ImagePair]], by_pair: dict[tuple[str, str, str], Score]
) -> None:
    print(f"\npixel F1 by pair\n{'dataset':<10} {'pair':<22} {'labelled':>8}", end="")
    print("".join(f" {method:>13}" for method in METHODS))
    for ds, pairs in datasets.items():
        for pair in pairs:
            f1 = [by_pair[method, ds, pair.name].pixel_f1 for method in METHODS]
            print(f"{ds:<10} {pair.name:<22} {int(pair.label.sum()):>8}", end="")
            print("".join(f" {value:>13.3f}" for value in f1))


if __name__ == "__main__":
    main()
