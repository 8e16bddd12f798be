"""Property tests: detect_changes never crashes on odd arrays and finds nothing where nothing changed."""

import numpy as np
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from detect import CHANGE_TYPES, Scene, change_mask, detect_changes

TRANSFORM = Affine(0.5, 0, 400_000, 0, -0.5, 3_000_000)
BANDS = ("blue", "green", "red", "nir")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(st.integers(1, 48), st.integers(1, 48))
odd_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, 1.0, 255.0, 65535.0, -1.0, np.nan, np.inf]),
)


def _scene(satellite, drone=None, dsm=None):
    return Scene(
        satellite=satellite,
        satellite_bands=BANDS[: len(satellite)] if satellite is not None else (),
        drone=drone,
        dsm=dsm,
    )


def _check(result):
    n = len(result)
    assert len(result.area_m2) == len(result.score) == len(result.change_type) == n
    assert all(t in CHANGE_TYPES for t in result.change_type)
    assert np.all((result.score >= 0) & (result.score <= 1))
    assert 0.0 <= result.qa["valid_fraction"] <= 1.0
    assert all(g.is_valid for g in result.geometry)


@SETTINGS
@given(data=st.data(), shape=shapes, bands=st.integers(1, 4))
def test_arbitrary_values_never_crash(data, shape, bands):
    arrays_of = arrays(np.float32, (bands, *shape), elements=odd_floats)
    before, after = data.draw(arrays_of), data.draw(arrays_of)
    dsm = arrays(np.float32, shape, elements=odd_floats)
    result = detect_changes(
        _scene(before, dsm=data.draw(dsm)), _scene(after, dsm=data.draw(dsm)), transform=TRANSFORM
    )
    _check(result)


@SETTINGS
@given(
    shape=shapes,
    values=st.tuples(st.floats(-1e4, 7e4), st.floats(-1e4, 7e4), st.floats(-100, 9000)),
)
def test_constant_epochs_give_no_objects(shape, values):
    first, second, height = values
    before = _scene(
        np.full((4, *shape), first, np.float32),
        drone=np.full((3, *shape), 120, np.float32),
        dsm=np.full(shape, height, np.float32),
    )
    after = _scene(
        np.full((4, *shape), second, np.float32),
        drone=np.full((3, *shape), 130, np.float32),
        dsm=np.full(shape, height + 0.3, np.float32),
    )
    result = detect_changes(before, after, transform=TRANSFORM)
    assert len(result) == 0
    assert not change_mask(before, after).any()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), shape=st.tuples(st.integers(8, 96), st.integers(8, 96)))
def test_identical_epochs_give_no_objects(seed, shape):
    rng = np.random.default_rng(seed)
    satellite = rng.uniform(0, 5000, (4, *shape)).astype(np.float32)
    drone = rng.uniform(0, 255, (3, *shape)).astype(np.float32)
    dsm = rng.uniform(0, 40, shape).astype(np.float32)
    scene = _scene(satellite, drone=drone, dsm=dsm)
    result = detect_changes(scene, scene, transform=TRANSFORM)
    assert len(result) == 0


@SETTINGS
@given(shape=shapes, fill=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_all_nodata_gives_no_objects_and_nothing_compared(shape, fill):
    blank = _scene(np.full((4, *shape), fill, np.float32), dsm=np.full(shape, fill, np.float32))
    rng = np.random.default_rng(0)
    real = _scene(rng.uniform(0, 5000, (4, *shape)).astype(np.float32))
    result = detect_changes(blank, real, transform=TRANSFORM)
    assert len(result) == 0
    assert result.qa["valid_fraction"] == 0.0


def test_empty_scenes_compare_nothing():
    result = detect_changes(Scene(), Scene(), transform=TRANSFORM)
    assert len(result) == 0 and result.qa["compared"] == ""


@SETTINGS
@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 40)),
        elements=st.floats(0, 10_000, width=32),
    ),
    st.floats(0.1, 3.0),
)
def test_smoothing_is_scipys_gaussian_filter(data, sigma):
    from scipy import ndimage as ndi

    from detect.cues import _smooth, _smooth_at

    want = ndi.gaussian_filter(data, (0, sigma, sigma), truncate=2.0)
    assert np.allclose(_smooth(data, sigma), want, rtol=1e-5, atol=1e-2)
    assert np.allclose(_smooth_at(data, sigma, 4), want[:, ::4, ::4], rtol=1e-5, atol=1e-2)


@SETTINGS
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))),
    st.integers(0, 4),
)
def test_shrinking_is_scipys_erosion_away_from_holes(mask, pixels):
    from scipy import ndimage as ndi

    from detect.cues import _shrink

    want = ndi.binary_erosion(mask, iterations=pixels, border_value=1) if pixels else mask
    assert np.array_equal(_shrink(mask, pixels), want)


@SETTINGS
@given(
    data=arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 40)),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
    sigma=st.floats(0.3, 4.0),
)
def test_smoothing_along_rows_flattened_is_the_same_to_the_bit(data, sigma):
    from detect.cues import _correlate, _gaussian_weights, _smooth_radius

    weights = _gaussian_weights(sigma, _smooth_radius(sigma)).astype(np.float32)
    rows = _correlate(data, weights, -1)  # contiguous: over the flattened array
    by_row = _correlate(np.asfortranarray(data), weights, -1)  # row by row
    np.testing.assert_array_equal(rows, by_row)


@settings(max_examples=6, deadline=None)
@given(
    size=st.tuples(st.integers(1100, 1180), st.integers(960, 1180)),
    sigma=st.sampled_from([0.0, 0.5, 1.3, 2.6]),
    window=st.sampled_from([3, 5, 9]),
    seed=st.integers(0, 2**16),
)
def test_edge_floor_of_bands_is_the_median_of_the_whole_images_samples_there(
    size, sigma, window, seed
):
    from scipy import ndimage as ndi

    from detect.align import gradient_magnitude
    from detect.cues import _EDGE_BAND, _EDGE_PERIOD, _STEP, _smooth, _weighted_sum, edge_floor
    from detect.sampling import ENOUGH

    rng = np.random.default_rng(seed)
    data = rng.normal(1000, 200, (3, *size)).astype(np.float32)
    data[:, 300:420, 100:300] += 900  # a bright block: edges the floor must see as they are
    weights = np.array([1 / 150, 1 / 200, 1 / 250])
    image = _smooth(_weighted_sum(data, weights)[np.newaxis], sigma)[0]
    whole = ndi.uniform_filter(gradient_magnitude(image), window)[::_STEP, ::_STEP]
    rows = np.arange(0, size[0], _STEP)
    banded = rows % _EDGE_PERIOD < _EDGE_BAND
    assert banded.sum() < rows.size / 3  # a third of the rows, ENOUGH samples on them
    assert banded.sum() * whole.shape[1] >= ENOUGH
    got = edge_floor(data, weights, sigma=sigma, window_px=window)
    assert got == float(np.median(whole[banded]))
    # Too few samples on bands (a 256² image): every row.
    small = data[:, :256, :256]
    image = _smooth(_weighted_sum(small, weights)[np.newaxis], sigma)[0]
    want = np.median(ndi.uniform_filter(gradient_magnitude(image), window)[::_STEP, ::_STEP])
    assert edge_floor(small, weights, sigma=sigma, window_px=window) == float(want)


@SETTINGS
@given(
    mask=arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40))),
    radius=st.integers(0, 20),
)
def test_disk_opening_closing_and_hole_filling_are_scipys(mask, radius):
    from scipy import ndimage as ndi
    from skimage.morphology import disk

    from detect.morphology import closing, fill_holes, opening

    footprint = disk(radius)
    assert np.array_equal(opening(mask, radius), ndi.binary_opening(mask, footprint))
    want = ndi.binary_closing(mask, footprint, border_value=0)
    assert np.array_equal(closing(mask, radius), want)
    assert np.array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))


@SETTINGS
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    row=st.floats(-6, 6),
    col=st.floats(-6, 6),
)
def test_shifting_a_valid_everywhere_mask_is_the_bilinear_shift_of_ones(shape, row, col):
    from detect.align import Shift, _bilinear_shift, apply_shift

    data = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(1, *shape)
    _, valid = apply_shift(data, np.ones(shape, bool), Shift(row, col))
    ones = np.ones((1, *shape), np.float32)
    assert np.array_equal(valid, _bilinear_shift(ones, row, col, fill=0.0)[0] > 0.99)
