import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from detect.qa import cloud_mask, cloud_share
from detect.sampling import ENOUGH, block_sums, sample_step

BANDS = ("blue", "green", "red", "nir")


def scene(size=200):
    """Vegetated ground (uint16 reflectance x 10000): dark red, bright NIR."""
    rng = np.random.default_rng(0)
    base = np.array([400, 700, 500, 3500], np.float32)[:, None, None]
    return (base + rng.normal(0, 30, (4, size, size))).astype(np.uint16)


def test_a_large_white_cloud_is_counted_and_ground_is_not():
    data = scene()
    valid = np.ones(data.shape[1:], bool)
    assert cloud_share(data, BANDS, valid, pixel_size=0.5) == 0.0
    data[:, 50:150, 50:150] = 3800  # 50 m x 50 m, white and flat in all four bands
    share = cloud_share(data, BANDS, valid, pixel_size=0.5)
    assert 0.2 < share <= 0.25


def test_small_bright_roofs_and_bright_vegetation_are_not_cloud():
    data = scene()
    valid = np.ones(data.shape[1:], bool)
    data[:, 20:40, 20:40] = 3800  # a 10 m x 10 m white roof
    data[:3, 100:180, 100:180] = np.array([3200, 3400, 3300])[:, None, None]
    data[3, 100:180, 100:180] = 9000  # bright in NIR: vegetation, not cloud
    assert not cloud_mask(data, BANDS, valid, pixel_size=0.5).any()


def test_rgb_only_and_uint8_work_and_invalid_pixels_do_not_count():
    rgb = np.full((3, 100, 100), 60, np.uint8)
    rgb[:, :, :60] = 240
    valid = np.ones((100, 100), bool)
    valid[:, :30] = False
    share = cloud_share(rgb, ("red", "green", "blue"), valid, pixel_size=0.5)
    assert np.isclose(share, 30 / 70, atol=0.02)


def test_without_visible_bands_nothing_is_flagged():
    data = np.full((1, 50, 50), 9000, np.uint16)
    assert cloud_share(data, ("pan",), np.ones((50, 50), bool), pixel_size=0.5) == 0.0


@settings(max_examples=30, deadline=None)
@given(arrays(np.float32, (3, 24, 24), elements=st.floats(-1e6, 1e6, width=32)))
def test_share_is_a_fraction_for_any_input(data):
    share = cloud_share(data, ("blue", "green", "red"), np.ones((24, 24), bool), pixel_size=0.5)
    assert 0.0 <= share <= 1.0


@pytest.mark.parametrize("shape, step", [((2, 17, 23), 4), ((9, 8), 3), ((1, 5, 5), 5)])
def test_block_sums_add_up_each_whole_block(shape, step):
    data = np.random.default_rng(0).integers(0, 1000, shape).astype(np.float32)
    out = block_sums(data, step)
    rows, cols = shape[-2] // step, shape[-1] // step
    assert out.shape == (*shape[:-2], rows, cols) and out.dtype == np.float32
    for i in range(rows):
        for j in range(cols):
            block = data[..., i * step : (i + 1) * step, j * step : (j + 1) * step]
            np.testing.assert_array_equal(out[..., i, j], block.sum(axis=(-2, -1)))


def test_sample_step_is_coarse_only_where_enough_samples_remain():
    tile = np.ones((1152, 1152), bool)
    assert sample_step(tile, (8, 4)) == 8  # 144² samples
    assert sample_step(np.ones((256, 256), bool), (8, 4)) == 4  # 32² would be too few
    sparse = tile.copy()
    sparse[:, 200:] = False  # 144 x 25 on the coarse grid
    assert (sparse[::8, ::8].sum() < ENOUGH) and sample_step(sparse, (8, 4)) == 4
