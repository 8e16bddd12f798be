"""The learned change scorer: features, training, prediction at any pixel size, model files,
the train / predict / evaluate commands and the pipeline's ``[detect] model``."""

import json
import pickle

import numpy as np
import pytest
import rasterio.features
import shapely
import sklearn
from affine import Affine
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from quarters import write_quarter
from scipy import ndimage as ndi

from cli import main
from detect import Scene
from detect.learn import (
    Model,
    detect_changes_learned,
    features,
    fit,
    learned_mask,
    probability,
    training_sample,
)
from detect.metrics import Score, score_mask
from errors import ConfigError, InputError
from pipeline import batch
from pipeline.config import load_config
from pipeline.learn import load_model, pair_mask, save_model
from pipeline.pairs import read_pair

RGB = ("red", "green", "blue")
FINE = 0.25  # m per pixel the synthetic scenes are drawn at
runner = CliRunner()


def synthetic_pair(seed, *, size_m=48.0, pixel_size=0.5, planted=2):
    """A before / after RGB pair (float32 (3, n, n), 0..255) and its label (bool (n, n)).

    Textured ground with trees and an existing building in both epochs; ``planted`` new roofs
    (8-14 m, grey or red, each with its shadow) in the after epoch, which is also brighter.
    Drawn at 0.25 m and block-averaged to ``pixel_size``, so two pixel sizes show one scene.
    """
    rng = np.random.default_rng(seed)
    n = int(size_m / FINE)
    texture = ndi.gaussian_filter(rng.normal(0, 1, (n, n)), 2.0 / FINE) * 40
    before = (
        np.array([120, 105, 80], np.float32)[:, None, None]
        + texture * np.array([1.0, 1.1, 0.8], np.float32)[:, None, None]
    )
    rows, cols = np.ogrid[:n, :n]
    for r, c in rng.integers(0, n, (2, 2)):
        before[:, (rows - r) ** 2 + (cols - c) ** 2 < (3 / FINE) ** 2] = [[50], [80], [45]]
    r, c = rng.integers(0, n - int(12 / FINE), 2)
    before[:, r : r + int(10 / FINE), c : c + int(12 / FINE)] = np.array([150, 150, 155])[
        :, None, None
    ]
    after = before.copy()
    label = np.zeros((n, n), bool)
    for _ in range(planted):
        h, w = (rng.integers(8, 15, 2) / FINE).astype(int)
        r, c = rng.integers(0, n - max(h, w) - int(2 / FINE), 2)
        roof = [(170, 165, 160), (95, 95, 100), (160, 80, 70)][rng.integers(3)]
        after[:, r : r + h, c : c + w] = np.array(roof, np.float32)[:, None, None]
        after[:, r + h : r + h + int(1.5 / FINE), c : c + w] *= 0.45
        label[r : r + h, c : c + w] = True
    after = after * np.float32(1.08) + 6
    before += rng.normal(0, 3, before.shape).astype(np.float32)
    after += rng.normal(0, 3, after.shape).astype(np.float32)
    f = int(round(pixel_size / FINE))

    def down(x):
        return x.reshape(*x.shape[:-2], n // f, f, n // f, f).mean(axis=(-3, -1))

    return (
        np.clip(down(before), 0, 255).astype(np.float32),
        np.clip(down(after), 0, 255).astype(np.float32),
        down(label.astype(np.float32)) >= 0.5,
    )


def scene(rgb):
    return Scene(satellite=rgb, satellite_bands=RGB)


@pytest.fixture(scope="module")
def model():
    samples, names = [], ()
    for seed in range(6):
        before, after, label = synthetic_pair(seed)
        feats = features(scene(before), scene(after), pixel_size=0.5)
        samples.append(training_sample(feats, label, n=4000, seed=seed))
        names = feats.names
    return fit(samples, feature_names=names, pixel_sizes=[0.5])


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_features_are_named_finite_float32():
    before, after, _ = synthetic_pair(0)
    feats = features(scene(before), scene(after), pixel_size=0.5)
    assert len(set(feats.names)) == len(feats.names) == feats.values.shape[0]
    assert feats.values.shape[1:] == (96, 96) and feats.values.dtype == np.float32
    assert np.isfinite(feats.values).all() and feats.valid.all()


def test_surroundings_look_the_named_way():
    # a new bright roof 6 m east and 6 m south of the scene's centre (48, 48)
    noise = np.random.default_rng(0).normal(0, 1, (2, 3, 96, 96)).astype(np.float32)
    before, after = 100.0 + noise
    after[:, 58:62, 58:62] += 100.0
    feats = features(scene(before), scene(after), pixel_size=0.5)
    value = dict(zip(feats.names, feats.values, strict=True))
    west_of_roof, north_of_roof = (60, 48), (48, 60)
    for name, far, near in (
        ("after_e_6m", "after_w_6m", west_of_roof),
        ("change_e_6m", "change_w_6m", west_of_roof),
        ("after_s_6m", "after_n_6m", north_of_roof),
    ):
        assert value[name][near] > 10 * abs(value[far][near]), name
    assert value["after_s_6m"][north_of_roof] > 10 * abs(value["before_s_6m"][north_of_roof])


def test_a_new_roof_is_one_compact_changed_region_of_the_after_epoch():
    # a new 10 m x 14 m roof on plain ground beside an old one; at 0.5 m and 0.25 m alike
    for pixel_size in (0.5, 0.25):
        f = round(0.5 / pixel_size)
        noise = np.random.default_rng(1).normal(0, 2, (2, 3, 96 * f, 96 * f)).astype(np.float32)
        before, after = 100.0 + noise
        before[:, 70 * f : 90 * f, 4 * f : 32 * f] += 80.0
        after[:, 70 * f : 90 * f, 4 * f : 32 * f] += 80.0
        after[:, 40 * f : 60 * f, 36 * f : 64 * f] += 80.0
        feats = features(scene(before), scene(after), pixel_size=pixel_size)
        value = dict(zip(feats.names, feats.values, strict=True))
        roof, ground = (50 * f, 50 * f), (10 * f, 10 * f)
        for scale in (100, 250):
            at = f"region_after_{scale}"
            assert np.exp(value[f"{at}_area_log"][roof]) == pytest.approx(140, rel=0.1)
            assert value[f"{at}_fill"][roof] == pytest.approx(1.0, abs=0.1)
            assert value[f"{at}_elongation"][roof] == pytest.approx(1.4, abs=0.1)
            assert value[f"{at}_change"][roof] > 10 * value[f"{at}_change"][ground]
            assert value[f"{at}_edge_contrast"][roof] > 2
            # before, the roof's place was part of the plain ground all around
            assert np.exp(value[f"region_before_{scale}_area_log"][roof]) > 1000


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(-80, 80))
def test_mirror_reads_as_numpy_pad_reflect(size, shift):
    from detect.learn import _mirror

    line = np.arange(size)
    reach = abs(shift)
    padded = np.pad(line, reach, mode="reflect") if size > 1 else np.zeros(size + 2 * reach, int)
    assert np.array_equal(_mirror(line + shift, size), padded[reach + shift : reach + shift + size])


def test_features_ignore_each_bands_gain_and_offset():
    before, after, _ = synthetic_pair(1)
    gain = np.array([1.3, 0.8, 1.1], np.float32)[:, None, None]
    offset = np.array([12, -4, 30], np.float32)[:, None, None]
    plain = features(scene(before), scene(after), pixel_size=0.5)
    rescaled = features(scene(before), scene(after * gain + offset), pixel_size=0.5)
    np.testing.assert_allclose(rescaled.values, plain.values, atol=1e-2)


def test_finds_the_planted_roofs(model):
    for seed in (100, 101, 102):
        before, after, label = synthetic_pair(seed)
        mask = learned_mask(model, scene(before), scene(after), pixel_size=0.5)
        assert mask.shape == label.shape and _iou(mask, label) >= 0.8


def test_same_scene_at_two_pixel_sizes_gives_the_same_mask(model):
    coarse = learned_mask(model, *map(scene, synthetic_pair(103)[:2]), pixel_size=0.5)
    fine = learned_mask(
        model, *map(scene, synthetic_pair(103, pixel_size=0.25)[:2]), pixel_size=0.25
    )
    assert fine.shape == (192, 192)
    assert _iou(coarse, fine.reshape(96, 2, 96, 2).mean(axis=(1, 3)) >= 0.5) >= 0.85


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(2, 64), st.integers(2, 64)),
    level=st.floats(0, 255),
    other=st.floats(0, 255),
)
def test_constant_or_identical_inputs_give_no_change(model, seed, shape, level, other):
    noise = np.random.default_rng(seed).uniform(0, 255, (3, *shape)).astype(np.float32)
    scenes = [scene(noise), scene(synthetic_pair(seed % 50)[0])]
    for s in scenes:
        assert not learned_mask(model, s, s, pixel_size=0.5).any()
    flat = [scene(np.full((3, *shape), v, np.float32)) for v in (level, other)]
    assert not learned_mask(model, *flat, pixel_size=0.5).any()


def test_nodata_gets_no_probability(model):
    before, after, _ = synthetic_pair(104)
    valid = np.ones(before.shape[1:], bool)
    valid[:, :30] = False
    masked = Scene(satellite=after, satellite_bands=RGB, satellite_valid=valid)
    change = probability(model, scene(before), masked, pixel_size=0.5)
    assert change.dtype == np.float32 and not change[:, :30].any()


def test_probability_is_the_classifiers_on_a_metre_grid(model, monkeypatch):
    # a band of a few rows at a time; the classifier's own figure at every pixel of a 1 m
    # grid, interpolated linearly between (0.5 m pixels: every second one, and the last)
    import detect.learn

    monkeypatch.setattr(detect.learn, "_CHUNK", 250)
    before, after, _ = synthetic_pair(106)
    feats = features(scene(before), scene(after), pixel_size=0.5)
    flat = feats.values.reshape(len(feats.names), -1).T
    want = model.classifier.predict_proba(flat)[:, 1].reshape(feats.valid.shape)
    change = probability(model, scene(before), scene(after), pixel_size=0.5)
    assert feats.valid.all() and change.shape == want.shape == (96, 96)
    grid = np.r_[0:96:2, 95]
    assert np.array_equal(change[np.ix_(grid, grid)], want[np.ix_(grid, grid)].astype(np.float32))
    between = (change[2:-1:2, 0:-1:2] + change[:-3:2, 0:-1:2]) / 2
    assert np.allclose(change[1:-2:2, 0:-1:2], between, atol=1e-6)
    # pixels of a metre or more: every pixel classified
    coarse = probability(model, scene(before), scene(after), pixel_size=1.0)
    feats = features(scene(before), scene(after), pixel_size=1.0)
    flat = feats.values.reshape(len(feats.names), -1).T
    want = model.classifier.predict_proba(flat)[:, 1].reshape(feats.valid.shape)
    assert np.array_equal(coarse, want.astype(np.float32))


def test_needs_red_green_blue():
    grey = Scene(satellite=np.zeros((1, 8, 8), np.float32), satellite_bands=("pan",))
    with pytest.raises(InputError, match="red, green and blue"):
        features(grey, grey, pixel_size=0.5)


def test_one_class_labels_are_refused():
    before, after, _ = synthetic_pair(0)
    feats = features(scene(before), scene(after), pixel_size=0.5)
    sample = training_sample(feats, np.zeros((96, 96), bool), n=500)
    with pytest.raises(InputError, match="both change and no change"):
        fit([sample], feature_names=feats.names, pixel_sizes=[0.5])


def test_tile_result_with_the_model(model):
    before, after, label = synthetic_pair(105)
    transform = Affine(0.5, 0, 500_000, 0, -0.5, 2_500_000)
    result = detect_changes_learned(scene(before), scene(after), model=model, transform=transform)
    truth = _outline(label, transform)
    # two roofs were planted; here they touch, and may come out as one object or two
    assert ndi.label(label)[1] <= len(result) <= 2
    assert all(0 <= s <= 1 for s in result.score) and result.qa["scorer"] == "learned"
    found = shapely.union_all(result.geometry)
    assert found.intersection(truth).area >= 0.8 * truth.area
    none = detect_changes_learned(
        scene(before),
        scene(after),
        model=model,
        transform=transform,
        core=(slice(0, 1), slice(0, 1)),
    )
    assert len(none) == 0


def _outline(label, transform):
    """The labelled pixels as one (multi)polygon in CRS coordinates."""
    shapes = rasterio.features.shapes(label.astype(np.uint8), mask=label, transform=transform)
    return shapely.union_all([shapely.geometry.shape(geom) for geom, _ in shapes])


# -- model files --------------------------------------------------------------------------------


def test_model_file_round_trip(model, tmp_path):
    path = save_model(model, tmp_path / "m.pkl", trained_on=["x"])
    loaded = load_model(path)
    assert isinstance(loaded, Model) and loaded.feature_names == model.feature_names
    before, after, _ = synthetic_pair(106)
    np.testing.assert_array_equal(
        probability(loaded, scene(before), scene(after), pixel_size=0.5),
        probability(model, scene(before), scene(after), pixel_size=0.5),
    )


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("sklearn_version", "0.0.1", "trained with scikit-learn 0.0.1 but " + sklearn.__version__),
        ("format_version", 99, "format-99 model"),
        ("format", "other", "is not a tuban model file"),
    ],
)
def test_mismatched_model_files_are_refused(model, tmp_path, key, value, expected):
    path = save_model(model, tmp_path / "m.pkl")
    header = pickle.loads(path.read_bytes())
    header[key] = value
    path.write_bytes(pickle.dumps(header))
    with pytest.raises(InputError, match=expected) as info:
        load_model(path)
    assert "retrain it with `tuban train" in str(info.value)


def test_not_a_model_file(tmp_path):
    (tmp_path / "junk.pkl").write_text("not a pickle")
    with pytest.raises(InputError, match="not a tuban model file"):
        load_model(tmp_path / "junk.pkl")
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.pkl")


def test_model_of_other_features_is_refused(model):
    before, after, _ = synthetic_pair(0)
    other = Model(model.classifier, model.feature_names[:-1])
    with pytest.raises(InputError, match="retrain it with `tuban train`"):
        probability(other, scene(before), scene(after), pixel_size=0.5)


# -- commands -----------------------------------------------------------------------------------


def _save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def _pairs_folder(root, seeds):
    for seed in seeds:
        before, after, label = synthetic_pair(seed)
        _save_png(root / "A" / f"p{seed}.png", before.transpose(1, 2, 0).round())
        _save_png(root / "B" / f"p{seed}.png", after.transpose(1, 2, 0).round())
        _save_png(root / "label" / f"p{seed}.png", np.where(label, 255, 0))
    (root / "meta.toml").write_text("pixel_size = 0.5\n")
    return root


def test_train_predict_evaluate_commands(tmp_path):
    model_path = tmp_path / "model.pkl"
    result = runner.invoke(
        main, ["train", str(_pairs_folder(tmp_path / "train", range(4))), "-o", str(model_path)]
    )
    assert result.exit_code == 0, result.output
    assert "of 4 pairs at 0.5 m" in result.output and model_path.exists()

    test = _pairs_folder(tmp_path / "test", [200])
    for extra in ([], ["--model", str(model_path)]):
        out = tmp_path / f"mask{len(extra)}.png"
        result = runner.invoke(
            main,
            [
                "predict",
                str(test / "A" / "p200.png"),
                str(test / "B" / "p200.png"),
                "-o",
                str(out),
                "--pixel-size",
                "0.5",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        mask = np.asarray(Image.open(out))
        assert mask.shape == (96, 96) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
    # the mask of `predict --model` is the model file's own, on the images as written
    before, after = (
        np.asarray(Image.open(test / part / "p200.png")).transpose(2, 0, 1).astype(np.float32)
        for part in ("A", "B")
    )
    want = learned_mask(load_model(model_path), scene(before), scene(after), pixel_size=0.5)
    assert np.array_equal(mask > 0, want)

    result = runner.invoke(main, ["evaluate", str(test), "--model", str(model_path), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["method"] == "learned" and scores["pairs"] == 1
    # the figures of that mask against the label (the quality: test_finds_the_planted_roofs)
    label = np.asarray(Image.open(test / "label" / "p200.png")) > 0
    want = score_mask(label, mask > 0).summary()
    for figure in ("pixel_f1", "object_recall", "object_precision"):
        assert scores[figure] == pytest.approx(want[figure]), figure
    result = runner.invoke(main, ["evaluate", str(test)])
    assert result.exit_code == 0 and result.output.startswith("unsupervised on 1 pairs: pixels P")


def test_evaluate_per_pair_scores_each_pair_alone(tmp_path):
    folder = _pairs_folder(tmp_path / "pairs", [210, 211])
    result = runner.invoke(main, ["evaluate", str(folder), "--json", "--per-pair"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert sorted(scores["by_pair"]) == ["p210", "p211"]
    pooled, alone_by = Score(), {}
    for name, figures in scores["by_pair"].items():
        pair = read_pair(
            folder / "A" / f"{name}.png",
            folder / "B" / f"{name}.png",
            label=folder / "label" / f"{name}.png",
            pixel_size=0.5,
        )
        alone = alone_by[name] = score_mask(pair.label, pair_mask(pair))
        pooled = pooled + alone
        assert figures == pytest.approx(alone.summary()), name
    assert scores["pixel_f1"] == pytest.approx(pooled.pixel_f1)
    # without the flag, the JSON line is the pooled figures alone
    plain = json.loads(runner.invoke(main, ["evaluate", str(folder), "--json"]).output)
    assert "by_pair" not in plain and plain["pixel_f1"] == scores["pixel_f1"]

    text = runner.invoke(main, ["evaluate", str(folder), "--per-pair"]).output.splitlines()
    rows = [line.split() for line in text[2:]]
    assert [row[0] for row in rows] == sorted(
        scores["by_pair"], key=lambda n: (scores["by_pair"][n]["pixel_f1"], n)
    )
    for row in rows:  # labelled and predicted pixels
        alone = alone_by[row[0]]
        assert (int(row[1]), int(row[2])) == (alone.tp + alone.fn, alone.tp + alone.fp)
    assert [float(row[5]) for row in rows] == [
        pytest.approx(scores["by_pair"][row[0]]["pixel_f1"], abs=5e-4) for row in rows
    ]


def test_predict_with_a_bad_model_exits_2(tmp_path):
    test = _pairs_folder(tmp_path / "test", [201])
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04junk")
    result = runner.invoke(
        main,
        [
            "predict",
            str(test / "A" / "p201.png"),
            str(test / "B" / "p201.png"),
            "-o",
            str(tmp_path / "m.png"),
            "--model",
            str(tmp_path / "bad.pkl"),
        ],
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "bad.pkl is not a tuban model file" in result.stderr


# -- the pipeline's [detect] model --------------------------------------------------------------


def _quarter(folder, model):
    rgb = {"red": 1, "green": 2, "blue": 3}
    return write_quarter(
        folder,
        {"A": [("satellite", "before.tif", rgb)], "B": [("satellite", "after.tif", rgb)]},
        halo=16,
        extra=f'[detect]\nmodel = "{model}"',
    )


def test_pipeline_uses_the_model(model, tmp_path, make_raster, make_offices):
    x0, y0 = 8000 * 32.0, 78_800 * 32.0  # a tile corner of the 32 m grid
    before, after, label = synthetic_pair(107, size_m=64.0)
    make_raster("before.tif", before.round().astype(np.uint8), origin=(x0, y0))
    make_raster("after.tif", after.round().astype(np.uint8), origin=(x0, y0))
    make_offices({"AT": (x0, y0 - 64, x0 + 64, y0)})
    save_model(model, tmp_path / "models" / "m.pkl")
    config = load_config(_quarter(tmp_path, "models/m.pkl"))
    batch.ingest(config, "A")
    batch.ingest(config, "B")
    suspects = batch.changes(config).suspects
    truth = _outline(label, Affine(0.5, 0, x0, 0, -0.5, y0))
    assert len(suspects) >= 1 and suspects["score"].between(0, 1).all()
    assert shapely.union_all(suspects.geometry).intersection(truth).area >= 0.7 * truth.area

    with pytest.raises(ConfigError, match=r"\[detect\] model: model .*missing.pkl does not exist"):
        batch.changes(load_config(_quarter(tmp_path, "models/missing.pkl")))


def test_a_tile_the_epochs_cover_in_part_gives_what_that_part_alone_gives(model):
    before, after, _ = synthetic_pair(105)
    transform = Affine(0.5, 0, 500_000, 0, -0.5, 2_500_000)
    alone = detect_changes_learned(scene(before), scene(after), model=model, transform=transform)
    # The pair inside a tile that only the before epoch covers beyond it.
    n, at = before.shape[1], 128
    canvas = (3, n + 2 * at, n + 2 * at)
    wide_before = np.full(canvas, 120.0, np.float32)
    wide_before += np.random.default_rng(3).normal(0, 3, canvas).astype(np.float32)
    wide_after = np.zeros(canvas, np.float32)
    part = (slice(None), slice(at, at + n), slice(at, at + n))
    wide_before[part], wide_after[part] = before, after
    valid = np.zeros(canvas[1:], bool)
    valid[part[1:]] = True

    within = detect_changes_learned(
        scene(wide_before),
        Scene(satellite=wide_after, satellite_bands=RGB, satellite_valid=valid),
        model=model,
        transform=transform @ Affine.translation(-at, -at),
    )

    assert len(within) == len(alone) >= 1
    found, want = shapely.union_all(within.geometry), shapely.union_all(alone.geometry)
    assert found.intersection(want).area >= 0.9 * found.union(want).area
    # the share of the whole tile: the part, less the pixels next to the nodata around it
    compared = within.qa["valid_fraction"] * canvas[1] * canvas[2]
    assert 0.85 * n * n <= compared <= alone.qa["valid_fraction"] * n * n
