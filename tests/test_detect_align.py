"""Known answers for co-registration and radiometric normalisation (detect.align, .radiometry)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from detect import Shift, apply_shift, estimate_shift, fit_gain_offset, measure_shift
from detect.align import registration_image


def _texture(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    return (field / field.std()).astype(np.float32)


def _fourier_shift(image, row, col):
    """``image`` with its content moved by (row, col) px, exactly (periodic)."""
    spectrum = ndi.fourier_shift(np.fft.fft2(image), (row, col))
    return np.fft.ifft2(spectrum).real.astype(np.float32)


@pytest.mark.parametrize("true", [(0.3, -1.7), (2.4, 0.6), (-0.55, 0.25), (-2.8, -2.15)])
def test_measure_shift_recovers_a_known_subpixel_shift(true):
    rng = np.random.default_rng(1)
    reference = 100 + 40 * _texture((256, 256))
    moved = _fourier_shift(reference, -true[0], -true[1])
    moved = 1.3 * moved + 20 + rng.normal(0, 2, moved.shape).astype(np.float32)  # gain, noise

    shift = measure_shift(reference[np.newaxis], moved[np.newaxis])

    assert shift.row == pytest.approx(true[0], abs=0.2)
    assert shift.col == pytest.approx(true[1], abs=0.2)
    assert shift.confidence > 0.5
    assert not shift.applied


def test_measure_shift_ignores_invalid_pixels():
    reference = 100 + 40 * _texture((256, 256))
    moved = _fourier_shift(reference, 1.5, -0.5)
    valid = np.ones(reference.shape, bool)
    valid[:, :80] = False
    moved[:, :80] = 0.0  # nodata in one epoch must not pull the match

    shift = measure_shift(reference[np.newaxis], moved[np.newaxis], valid=valid)

    assert (shift.row, shift.col) == pytest.approx((-1.5, 0.5), abs=0.2)


def test_measure_shift_has_no_confidence_without_features():
    flat = np.full((1, 64, 64), 7.0, np.float32)
    assert measure_shift(flat, flat).confidence == 0.0
    noise_a = np.random.default_rng(2).normal(size=(1, 128, 128)).astype(np.float32)
    noise_b = np.random.default_rng(3).normal(size=(1, 128, 128)).astype(np.float32)
    assert measure_shift(noise_a, noise_b).confidence < 0.3


def test_estimate_shift_on_registration_images_of_a_large_tile():
    reference = 100 + 40 * _texture((700, 700))
    moved = _fourier_shift(reference, -1.8, 0.9)
    valid = np.ones(reference.shape, bool)

    shift = estimate_shift(
        registration_image(reference[np.newaxis], valid),
        registration_image(moved[np.newaxis], valid),
    )
    windowed = measure_shift(reference[np.newaxis], moved[np.newaxis])

    assert (shift.row, shift.col) == pytest.approx((1.8, -0.9), abs=0.2)
    assert (windowed.row, windowed.col) == pytest.approx((1.8, -0.9), abs=0.2)


def test_apply_shift_registers_the_moving_image():
    reference = 100 + 40 * _texture((128, 128), sigma=3.0)
    moved = _fourier_shift(reference, 1.25, -2.5)
    valid = np.ones(reference.shape, bool)

    shift = measure_shift(reference[np.newaxis], moved[np.newaxis])
    back, back_valid = apply_shift(moved[np.newaxis], valid, shift)

    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(back[0][inner] - reference[inner]).mean() < 0.05 * reference.std()
    # Registering moves the content up 1.25 px and right 2.5 px: the bottom 2 rows and the
    # left 3 columns come from outside the tile and are no longer valid.
    assert not back_valid[-2:].any() and not back_valid[:, :2].any()
    assert back_valid[:-2, 3:].all()


def test_apply_shift_by_zero_is_the_identity():
    data = _texture((2, 16, 16))
    valid = np.ones((16, 16), bool)
    out, out_valid = apply_shift(data, valid, Shift())
    np.testing.assert_array_equal(out, data)
    assert out_valid.all()


@pytest.mark.parametrize(
    "shape, row, col",
    [
        ((2, 40, 30), 0.3, -0.7),
        ((1, 40, 30), 2.5, 3.25),
        ((3, 9, 7), -6.6, 1.1),
        ((1, 5, 5), 8.0, -9.5),
    ],
)
def test_apply_shift_interpolates_bilinearly_and_repeats_the_edges(shape, row, col):
    data = _texture(shape, seed=3) * 50 + 200
    valid = np.ones(shape[1:], bool)
    out, out_valid = apply_shift(data, valid, Shift(row, col, 1.0, applied=True))
    expected = ndi.shift(data.astype(np.float64), (0, row, col), order=1, mode="nearest")
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-3)
    rows_in = (np.arange(shape[1]) - row >= 0) & (np.arange(shape[1]) - row <= shape[1] - 1)
    cols_in = (np.arange(shape[2]) - col >= 0) & (np.arange(shape[2]) - col <= shape[2] - 1)
    np.testing.assert_array_equal(out_valid, rows_in[:, None] & cols_in[None, :])


def _scene_bands(seed=4, shape=(3, 200, 200)):
    base = np.array([500.0, 800.0, 1200.0])[:, None, None]
    return (base + 300 * _texture(shape, seed=seed, sigma=(0, 3, 3))).astype(np.float32)


def test_fit_gain_offset_recovers_known_radiometry_despite_scattered_change():
    rng = np.random.default_rng(5)
    reference = _scene_bands()
    gain, offset = np.array([1.4, 0.8, 1.1]), np.array([-100.0, 50.0, 300.0])
    moving = (reference - offset[:, None, None]) / gain[:, None, None]
    moving += rng.normal(0, 2, moving.shape)
    changed = rng.random(reference.shape[1:]) < 0.2
    moving[:, changed] = rng.uniform(0, 3000, (3, changed.sum()))

    fitted_gain, fitted_offset = fit_gain_offset(
        reference, moving.astype(np.float32), np.ones(changed.shape, bool)
    )

    np.testing.assert_allclose(fitted_gain, gain, rtol=0.02)
    np.testing.assert_allclose(fitted_offset, offset, atol=20)


@pytest.mark.parametrize("side", [200, 1100])  # sampled 6 and 8 px apart
def test_fit_gain_offset_is_not_pulled_by_a_changed_block(side):
    reference = _scene_bands(seed=6, shape=(3, side, side))
    gain, offset = np.array([0.9, 1.2, 1.05]), np.array([40.0, -60.0, 10.0])
    moving = (reference - offset[:, None, None]) / gain[:, None, None]
    block = np.zeros(reference.shape[1:], bool)
    k = side / 200
    block[int(20 * k) : int(110 * k), int(30 * k) : int(110 * k)] = True  # 18 % became a roof
    moving[:, block] += 800

    fitted_gain, fitted_offset = fit_gain_offset(
        reference, moving.astype(np.float32), np.ones(block.shape, bool)
    )

    np.testing.assert_allclose(fitted_gain, gain, rtol=0.02)
    np.testing.assert_allclose(fitted_offset, offset, atol=20)


def test_fit_gain_offset_handles_flat_and_empty_input():
    flat = np.full((2, 32, 32), 5.0, np.float32)
    gain, offset = fit_gain_offset(flat, flat + 3, np.ones((32, 32), bool))
    np.testing.assert_array_equal(gain, [1.0, 1.0])
    np.testing.assert_allclose(offset, [-3.0, -3.0])
    gain, offset = fit_gain_offset(flat, flat, np.zeros((32, 32), bool))
    np.testing.assert_array_equal(gain, [1.0, 1.0])
    np.testing.assert_array_equal(offset, [0.0, 0.0])


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).integers(0, 300, (3, 500)).astype(np.float64),  # DN with ties
        np.random.default_rng(1).integers(0, 65536, (2, 400)).astype(np.float64),
        np.random.default_rng(2).normal(100, 30, (2, 300)),  # not whole numbers
        np.random.default_rng(3).integers(-5, 5, (2, 300)).astype(np.float64),  # negative
        np.array([[1.0, np.nan, 0.0, 1.0]]),
    ],
)
def test_rank_order_is_the_stable_argsort(values):
    from detect.radiometry import _stable_order

    np.testing.assert_array_equal(_stable_order(values), values.argsort(axis=1, kind="stable"))


@pytest.mark.parametrize("shape", [(201, 187), (128, 255)])
def test_measure_shift_on_odd_sized_tiles(shape):
    # The peak is refined on half the spectrum of real FFTs, whose layout differs for odd sides.
    reference = 100 + 40 * _texture(shape, seed=4)
    moved = _fourier_shift(reference, -1.35, 0.8)

    shift = measure_shift(reference[np.newaxis], moved[np.newaxis])

    assert (shift.row, shift.col) == pytest.approx((1.35, -0.8), abs=0.1)
    assert shift.confidence > 0.5
