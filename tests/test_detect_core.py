"""Planted changes and nuisances on small synthetic tiles (detect.detect_changes, change_mask)."""

import dataclasses

import numpy as np
import pytest
import shapely
from affine import Affine
from scipy import ndimage as ndi

from detect import (
    CHANGE_TYPES,
    DetectParams,
    Scene,
    TileResult,
    change_mask,
    cue_maps,
    detect_changes,
)
from detect.cues import tile_levels
from detect.focus import focus_windows
from detect.pairs import prepare_pairs
from detect.scene import compared_box, crop, layers
from errors import ConfigError, InputError

PX = 0.5  # m per pixel
BANDS = ("blue", "green", "red", "nir")
GROUND = np.array([1000.0, 1080.0, 1200.0, 1650.0])
GRASS = np.array([380.0, 760.0, 520.0, 3200.0])
SOIL = np.array([850.0, 1150.0, 1600.0, 2250.0])
CLAY = np.array([650.0, 800.0, 1450.0, 2000.0])  # red clay tiles
RUBBLE = np.array([1250.0, 1300.0, 1420.0, 1750.0])
SHADE = np.array([0.45, 0.38, 0.34, 0.30])  # shadowed / lit


def _field(shape, sigma, seed):
    noise = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return noise / noise.std()


def _ground(shape, seed=0):
    """Textured bare ground, (4, h, w) reflectance x 10000."""
    light = 1 + 0.08 * _field(shape, 8, seed) + 0.04 * _field(shape, 1, seed + 1)
    return GROUND[:, None, None] * light[None]


def _paint(img, rows, cols, colour):
    out = img.copy()
    light = img[:, rows, cols].mean(axis=0) / GROUND.mean()  # keep the ground's texture
    out[:, rows, cols] = colour[:, None, None] * light
    return out


def _shade(img, rows, cols):
    out = img.copy()
    out[:, rows, cols] *= SHADE[:, None, None]
    return out


def _dn(reflectance, seed):
    """Sensor DN: blurred optics, noise, uint16 values as float32."""
    img = ndi.gaussian_filter(reflectance, (0, 0.6, 0.6))
    img += np.random.default_rng(seed).normal(0, 20, img.shape)
    return np.clip(np.rint(img), 1, 65535).astype(np.float32)


def _transform(col=0, row=0):
    return Affine(PX, 0, 520_000 + col * PX, 0, -PX, 2_520_000 - row * PX)


def _dsm(shape, seed, raised=()):
    height = 20 + 0.05 * np.random.default_rng(seed).normal(size=shape)
    for rows, cols, metres in raised:
        height[rows, cols] += metres
    return height.astype(np.float32)


def _sat(img, seed):
    return Scene(satellite=_dn(img, seed), satellite_bands=BANDS)


def _only(result: TileResult):
    assert len(result) == 1, result.to_records()
    return result.to_records()[0]


SHAPE = (192, 192)
ROOF = (slice(70, 118), slice(80, 112))  # 24 m x 16 m
ROOF_SHADOW = (slice(58, 70), slice(68, 100))  # cast to the north-west


def test_new_building_with_dsm_is_one_object_of_the_right_area_height_and_type():
    ground = _ground(SHAPE)
    after = _shade(_paint(ground, *ROOF, CLAY), *ROOF_SHADOW)
    before_scene = Scene(satellite=_dn(ground, 1), satellite_bands=BANDS, dsm=_dsm(SHAPE, 1))
    after_scene = Scene(
        satellite=_dn(after, 2), satellite_bands=BANDS, dsm=_dsm(SHAPE, 2, [(*ROOF, 6.0)])
    )

    result = detect_changes(before_scene, after_scene, transform=_transform())

    obj = _only(result)
    assert obj["change_type"] == "new_building"
    assert obj["area_m2"] == pytest.approx(24 * 16, rel=0.15)
    assert obj["height_gain_m"] == pytest.approx(6.0, abs=1.0)
    roof = shapely.box(520_040, 2_520_000 - 59, 520_056, 2_520_000 - 35)
    assert shapely.area(obj["geometry"] & roof) / roof.area > 0.85
    assert obj["x"] == pytest.approx(520_048, abs=1.5)
    assert obj["y"] == pytest.approx(2_520_000 - 47, abs=1.5)
    assert 0.0 <= obj["score"] <= 1.0


def test_new_building_without_dsm_is_typed_by_its_new_shadow():
    ground = _ground(SHAPE)
    after = _shade(_paint(ground, *ROOF, CLAY), *ROOF_SHADOW)

    result = detect_changes(_sat(ground, 1), _sat(after, 2), transform=_transform())

    obj = _only(result)
    assert obj["change_type"] == "new_building"
    assert obj["area_m2"] == pytest.approx(24 * 16, rel=0.2)  # the shadow is not part of it
    assert np.isnan(obj["height_gain_m"])


def test_rgb_only_pair_finds_the_new_building():
    ground = _ground(SHAPE)
    after = _shade(_paint(ground, *ROOF, CLAY), *ROOF_SHADOW)
    rgb = [BANDS.index(b) for b in ("red", "green", "blue")]
    scenes = [
        Scene(satellite=_dn(img, seed)[rgb], satellite_bands=("red", "green", "blue"))
        for img, seed in ((ground, 1), (after, 2))
    ]

    obj = _only(detect_changes(*scenes, transform=_transform()))

    assert obj["area_m2"] == pytest.approx(24 * 16, rel=0.2)
    mask = change_mask(*scenes, pixel_size=PX)
    assert mask.dtype == bool and mask.shape == SHAPE
    assert mask[ROOF].mean() > 0.9 and mask.sum() < 1.2 * mask[ROOF].size


def test_extension_touches_a_building_that_stands_in_both_epochs():
    house = (slice(70, 118), slice(60, 90))
    wing = (slice(80, 110), slice(90, 106))  # 15 m x 8 m against the east wall
    before = _paint(_ground(SHAPE), *house, CLAY)
    after = _paint(before, *wing, CLAY * 1.2)
    before_scene = Scene(
        satellite=_dn(before, 1), satellite_bands=BANDS, dsm=_dsm(SHAPE, 1, [(*house, 9.0)])
    )
    after_scene = Scene(
        satellite=_dn(after, 2),
        satellite_bands=BANDS,
        dsm=_dsm(SHAPE, 2, [(*house, 9.0), (*wing, 9.0)]),
    )

    obj = _only(detect_changes(before_scene, after_scene, transform=_transform()))

    assert obj["change_type"] == "extension"
    assert obj["area_m2"] == pytest.approx(15 * 8, rel=0.25)


def test_demolition_loses_height():
    ground = _ground(SHAPE)
    before = _paint(ground, *ROOF, CLAY)
    after = _paint(ground, *ROOF, RUBBLE)
    before_scene = Scene(
        satellite=_dn(before, 1), satellite_bands=BANDS, dsm=_dsm(SHAPE, 1, [(*ROOF, 9.0)])
    )
    after_scene = Scene(satellite=_dn(after, 2), satellite_bands=BANDS, dsm=_dsm(SHAPE, 2))

    obj = _only(detect_changes(before_scene, after_scene, transform=_transform()))

    assert obj["change_type"] == "demolition"
    assert obj["height_gain_m"] == pytest.approx(-9.0, abs=1.0)


def test_vegetation_turned_bare_is_land_clearing():
    field = (slice(40, 150), slice(50, 160))
    before = _paint(_ground(SHAPE), *field, GRASS)
    after = _paint(_ground(SHAPE), *field, SOIL)

    obj = _only(detect_changes(_sat(before, 1), _sat(after, 2), transform=_transform()))

    assert obj["change_type"] == "land_clearing"
    assert obj["vegetation_before"] > 0.9 and obj["vegetation_after"] < 0.1


def _town(shape=SHAPE, seed=0):
    """Ground with a few houses, their shadows, a lawn and a tree-lined field."""
    img = _ground(shape, seed)
    for r, c in ((30, 30), (30, 120), (120, 40), (130, 130)):
        img = _shade(
            _paint(img, slice(r, r + 30), slice(c, c + 24), CLAY),
            slice(r - 8, r),
            slice(c - 8, c + 16),
        )
    return _paint(img, slice(80, 110), slice(80, 180), GRASS)


def test_gain_offset_and_noise_between_quarters_are_not_change():
    town = _town()
    brighter = 1.12 * town + 150

    result = detect_changes(_sat(town, 1), _sat(brighter, 2), transform=_transform())

    assert len(result) == 0


def test_misregistration_is_measured_undone_and_not_change():
    big = _town((232, 232))
    moved = ndi.shift(big, (0, 2.3, -1.6), order=3, mode="nearest")
    crop = (slice(None), slice(20, 212), slice(20, 212))

    result = detect_changes(_sat(big[crop], 1), _sat(moved[crop], 2), transform=_transform())

    assert len(result) == 0
    assert result.qa["shift_applied"]
    assert result.qa["shift_row_px"] == pytest.approx(-2.3, abs=0.2)
    assert result.qa["shift_col_px"] == pytest.approx(1.6, abs=0.2)


def test_seasonal_vegetation_is_not_change():
    town = _town()
    summer = town.copy()
    lawn = (slice(80, 110), slice(80, 180))
    summer[:, lawn[0], lawn[1]] *= np.array([0.92, 1.1, 0.75, 1.3])[:, None, None]

    assert len(detect_changes(_sat(town, 1), _sat(summer, 2), transform=_transform())) == 0


def _clouded(town, cloud_at, shadow_at, *, radius, fade, darkening):
    """``town`` under a round cloud centred at ``cloud_at`` (row, col in m) and its shadow at
    ``shadow_at``: opacity fading to 0 over the outer ``fade`` share of ``radius`` (m), and the
    shadow darkening each band by up to ``darkening``."""
    rows, cols = np.mgrid[: town.shape[1], : town.shape[2]] * PX

    def disc(at):
        distance = np.hypot(rows - at[0], cols - at[1]) / radius
        return np.clip((1 - distance) / fade, 0, 1) ** 1.5

    cloud, shadow = disc(cloud_at), disc(shadow_at)
    white = np.array([4300.0, 4400.0, 4500.0, 4800.0])[:, None, None]
    shaded = town * (1 - np.asarray(darkening)[:, None, None] * shadow)
    return shaded * (1 - cloud) + white * cloud


def test_cloud_with_haze_and_its_shadow_is_not_change():
    town = _town((400, 400))
    cloudy = _clouded(
        town, (65, 65), (130, 130), radius=45, fade=0.3, darkening=[0.55, 0.6, 0.63, 0.66]
    )

    result = detect_changes(_sat(town, 1), _sat(cloudy, 2), transform=_transform())

    assert len(result) == 0
    assert result.qa["cloud_fraction"] > 0.2


def test_a_small_cloud_and_its_faint_shadow_are_not_change_and_are_outlined():
    # The cloud's core (~1000 m²) is below what a lone bright patch needs to be a cloud by
    # size alone, and its shadow darkens the ground by at most 30 %: not a shadow by itself.
    # The cloud is known by its hazy rim, its shadow by having the cloud's shape nearby.
    town = _town((400, 400))
    cloudy = _clouded(town, (140, 60), (60, 140), radius=30, fade=0.5, darkening=[0.3] * 4)

    result = detect_changes(_sat(town, 1), _sat(cloudy, 2), transform=_transform())

    assert len(result) == 0, result.to_records()
    for row, col in ((140, 60), (60, 140)):  # the cloud's and the shadow's centres, m
        assert result.cloud.contains(shapely.Point(520_000 + col, 2_520_000 - row))
    assert not result.cloud.contains(shapely.Point(520_000 + 180, 2_520_000 - 180))


def test_a_large_white_roof_with_sharp_edges_is_change_not_cloud():
    shape = (240, 240)
    ground = _ground(shape)
    after = ground.copy()
    after[:, 60:140, 70:150] = np.array([4300.0, 4400.0, 4500.0, 4800.0])[:, None, None]  # 1600 m²

    result = detect_changes(_sat(ground, 1), _sat(after, 2), transform=_transform())

    obj = _only(result)
    assert obj["area_m2"] == pytest.approx(1600, rel=0.1)
    assert result.qa["cloud_fraction"] == 0.0
    assert result.cloud.is_empty


def test_a_boat_on_a_lake_is_ringed_by_water_and_a_roof_on_land_is_not():
    ground = _ground(SHAPE)
    lake = np.array([420.0, 520.0, 300.0, 150.0])  # dark, NIR lowest: NDWI > 0.1
    before = _paint(ground, slice(20, 172), slice(20, 100), lake)
    after = _paint(before, slice(80, 110), slice(50, 66), RUBBLE)  # a boat, 15 m x 8 m
    after = _paint(after, slice(80, 110), slice(130, 160), CLAY)  # a roof on land

    result = detect_changes(_sat(before, 1), _sat(after, 2), transform=_transform())

    assert len(result) == 2, result.to_records()
    boat, roof = result.cues["water_share"][np.argsort(result.x)]  # west to east
    assert boat > 0.9
    assert roof == 0.0


def test_nodata_edges_are_not_compared():
    town = _town()
    after = _dn(town, 2)
    after[:, :, 150:] = 0.0
    valid = np.ones(SHAPE, bool)
    valid[:, 150:] = False

    result = detect_changes(
        _sat(town, 1),
        Scene(satellite=after, satellite_bands=BANDS, satellite_valid=valid),
        transform=_transform(),
    )

    assert len(result) == 0
    assert result.qa["valid_fraction"] < 150 / 192


def test_an_object_crossing_a_tile_edge_is_owned_by_exactly_one_tile():
    shape = (160, 352)
    ground = _ground(shape)
    # Both cross column 168, the boundary between the two tiles' cores (the tiles share 128
    # columns): one has its centroid at column 171, the other at column 163.
    after = _paint(ground, slice(20, 60), slice(156, 186), CLAY)
    after = _paint(after, slice(100, 140), slice(150, 176), CLAY * 1.3)
    windows = {"west": (slice(0, 232), slice(0, 168)), "east": (slice(104, 352), slice(64, 248))}
    before_dn, after_dn = _dn(ground, 1), _dn(after, 2)
    found = {}
    for name, (cols, core_cols) in windows.items():
        result = detect_changes(
            Scene(satellite=before_dn[:, :, cols], satellite_bands=BANDS),
            Scene(satellite=after_dn[:, :, cols], satellite_bands=BANDS),
            transform=_transform(col=cols.start),
            core=(slice(0, shape[0]), core_cols),
        )
        found[name] = result.x
    # Each object is reported once, by the tile whose core holds its centroid.
    assert len(found["west"]) == 1 and len(found["east"]) == 1
    assert found["west"][0] == pytest.approx(520_000 + 163 * PX, abs=1.0)
    assert found["east"][0] == pytest.approx(520_000 + 171 * PX, abs=1.0)


def _quarter_tile(shape=(512, 512)):
    """A tile where a few things changed on mostly quiet ground: four new roofs (two raised
    in the DSM) with their shadows, a field greener in the after epoch and a nodata strip."""
    before = _paint(_ground(shape, 3), slice(300, 420), slice(20, 200), GRASS)
    after = before.copy()
    after[:, 300:420, 20:200] *= np.array([0.92, 1.1, 0.75, 1.3])[:, None, None]
    roofs = [(40, 40), (60, 400), (400, 300), (250, 250)]
    for r, c in roofs:
        after = _shade(
            _paint(after, slice(r, r + 30), slice(c, c + 24), CLAY),
            slice(r - 8, r),
            slice(c - 8, c + 16),
        )
    raised = [(slice(r, r + 30), slice(c, c + 24), 6.0) for r, c in roofs[:2]]
    valid = np.ones(shape, bool)
    valid[:, 490:] = False
    first = Scene(satellite=_dn(before, 1), satellite_bands=BANDS, dsm=_dsm(shape, 1))
    second = Scene(
        satellite=np.where(valid, _dn(after, 2), 0.0).astype(np.float32),
        satellite_bands=BANDS,
        satellite_valid=valid,
        dsm=_dsm(shape, 2, raised),
    )
    return first, second


@pytest.mark.parametrize("with_dsm", [True, False])
def test_focusing_on_candidate_windows_finds_what_the_whole_tile_finds(with_dsm):
    before, after = _quarter_tile()
    if not with_dsm:  # the screen's bound is then the optical evidence alone
        before, after = (dataclasses.replace(s, dsm=None) for s in (before, after))
    core = (slice(16, 496), slice(16, 496))

    focused = detect_changes(before, after, transform=_transform(), core=core)
    whole = detect_changes(
        before, after, transform=_transform(), core=core, params=DetectParams(focus=False)
    )

    assert len(focused) == 4
    assert focused.change_type.tolist() == whole.change_type.tolist()
    for got, want in zip(focused.to_records(), whole.to_records(), strict=True):
        assert got["geometry"].equals(want["geometry"])
        assert got == pytest.approx({**want, "geometry": got["geometry"]}, nan_ok=True)
    assert focused.qa == whole.qa
    assert focused.cloud.equals(whole.cloud)


def test_focus_windows_leave_out_quiet_ground_and_seasonal_vegetation():
    before, after = _quarter_tile()
    pairs = prepare_pairs(layers(before), layers(after), pixel_size=PX, params=DetectParams())
    levels = tile_levels(pairs, pixel_size=PX, params=DetectParams())

    windows = focus_windows(pairs, levels, (512, 512), pixel_size=PX, params=DetectParams())

    covered = np.zeros((512, 512), bool)
    for window in windows:
        assert not covered[window].any()  # disjoint
        covered[window] = True
    assert covered.mean() < 0.4
    for r, c in [(40, 40), (60, 400), (400, 300), (250, 250)]:  # every roof and its shadow
        assert covered[r - 8 : r + 30, c - 8 : c + 24].all()
    assert not covered[330:390, 60:160].any()  # inside the greener field


def test_cue_maps_show_the_change_and_the_shadow_it_casts():
    ground = _ground(SHAPE)
    after = _shade(_paint(ground, *ROOF, CLAY), *ROOF_SHADOW)

    cues = cue_maps(_sat(ground, 1), _sat(after, 2), pixel_size=PX)

    assert cues.score.shape == SHAPE and cues.score.dtype == np.float32
    assert 0.0 <= cues.score.min() and cues.score.max() <= 1.0
    assert np.median(cues.score[ROOF]) > 0.9
    inner_shadow = (slice(60, 68), slice(70, 98))
    assert cues.shadow_after[inner_shadow].mean() > 0.9
    assert cues.score[inner_shadow].max() == 0.0
    assert not cues.shadow_after[ROOF].any()
    assert np.isnan(cues.height).all()


def test_to_records_lists_every_column_per_object():
    ground = _ground(SHAPE)
    after = _paint(ground, *ROOF, CLAY)
    result = detect_changes(_sat(ground, 1), _sat(after, 2), transform=_transform())

    (record,) = result.to_records()

    assert {"geometry", "change_type", "area_m2", "height_gain_m", "score", "x", "y"} <= set(record)
    assert record["change_type"] in CHANGE_TYPES
    assert isinstance(record["area_m2"], float)
    assert record["geometry"].is_valid and record["geometry"].geom_type == "Polygon"
    assert record["area_m2"] == pytest.approx(record["geometry"].area, rel=0.1)


def test_min_area_drops_small_objects():
    ground = _ground(SHAPE)
    after = _paint(ground, *ROOF, CLAY)
    big = DetectParams(min_area_m2=500)
    assert len(detect_changes(_sat(ground, 1), _sat(after, 2), transform=_transform())) == 1
    assert (
        len(detect_changes(_sat(ground, 1), _sat(after, 2), transform=_transform(), params=big))
        == 0
    )


def test_epochs_of_different_shapes_are_an_input_error():
    before = Scene(satellite=np.ones((4, 64, 64), np.float32), satellite_bands=BANDS)
    after = Scene(satellite=np.ones((4, 64, 60), np.float32), satellite_bands=BANDS)
    with pytest.raises(InputError, match=r"after is \(64, 60\) but before is \(64, 64\)"):
        detect_changes(before, after, transform=_transform())


@pytest.mark.parametrize(
    ("scene", "message"),
    [
        (Scene(satellite=np.ones((3, 8, 8)), satellite_bands=BANDS), "names 4"),
        (Scene(satellite=np.ones((8, 8)), satellite_bands=("red",)), r"give \(bands, rows, cols\)"),
        (Scene(drone=np.ones((4, 8, 8))), "drone has 4 band"),
        (Scene(dsm=np.ones((8, 8)), dsm_valid=np.ones((8, 9), bool)), "covers"),
        (Scene(drone_valid=np.ones((8, 8), bool)), "without before.drone"),
    ],
)
def test_malformed_scenes_are_input_errors_with_one_line(scene, message):
    with pytest.raises(InputError, match=message) as info:
        detect_changes(scene, Scene(), transform=_transform())
    assert "\n" not in str(info.value)


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="score_low"):
        DetectParams(score_low=0.9, score_high=0.5)
    with pytest.raises(ConfigError, match="spectral_z"):
        DetectParams(spectral_z=(8.0, 3.0))
    with pytest.raises(ConfigError, match=r"outline_share = 1.5; give a value in 0..1"):
        DetectParams(outline_share=1.5)
    with pytest.raises(InputError, match="pixel size"):
        change_mask(Scene(), Scene(), pixel_size=0)


def test_a_tile_the_epochs_cover_in_part_finds_what_that_part_alone_finds():
    before, after = _quarter_tile()
    alone = detect_changes(before, after, transform=_transform())
    # The same part inside a larger tile: the before epoch has ground all around it, the after
    # epoch nothing (the edge of a drone flight's patch), so only the part can be compared.
    shape, (top, left) = (768, 896), (128, 192)
    part = (slice(top, top + 512), slice(left, left + 512))
    sat_before = _dn(_ground(shape, 5), 6)
    sat_before[:, part[0], part[1]] = before.satellite
    sat_after = np.zeros_like(sat_before)
    sat_after[:, part[0], part[1]] = after.satellite
    valid = np.zeros(shape, bool)
    valid[part] = after.satellite_valid
    dsm_before, dsm_after = _dsm(shape, 7), np.zeros(shape, np.float32)
    dsm_before[part], dsm_after[part] = before.dsm, after.dsm
    dsm_valid = np.zeros(shape, bool)
    dsm_valid[part] = True

    within = detect_changes(
        Scene(satellite=sat_before, satellite_bands=BANDS, dsm=dsm_before),
        Scene(
            satellite=sat_after,
            satellite_bands=BANDS,
            satellite_valid=valid,
            dsm=dsm_after,
            dsm_valid=dsm_valid,
        ),
        transform=_transform(col=-left, row=-top),  # the part lies where the tile alone does
        core=(slice(0, top + 400), slice(0, shape[1])),  # not the roof at part rows 400-430
    )

    assert len(alone) == 4
    assert sorted(within.y) == pytest.approx(sorted(alone.y[alone.y > 2_520_000 - 400 * PX]))
    for got in within.to_records():
        want = min(
            alone.to_records(), key=lambda r: abs(r["x"] - got["x"]) + abs(r["y"] - got["y"])
        )
        assert got["change_type"] == want["change_type"]
        overlap = shapely.area(got["geometry"] & want["geometry"])
        assert overlap / shapely.area(got["geometry"] | want["geometry"]) > 0.95
    compared = within.qa["valid_fraction"] * shape[0] * shape[1]
    assert compared == pytest.approx(alone.qa["valid_fraction"] * 512 * 512, rel=0.05)


def test_the_compared_box_holds_what_both_epochs_cover_with_its_margin_on_the_alignment():
    data = np.ones((1, 300, 400), np.float32)
    first, second = np.zeros((300, 400), bool), np.zeros((300, 400), bool)
    first[10:200, 30:350], second[100:290, 5:100] = True, True
    before = Scene(satellite=data, satellite_bands=("red",), satellite_valid=first)
    after = Scene(satellite=data, satellite_bands=("red",), satellite_valid=second)

    assert compared_box(before, after) == (slice(100, 200), slice(30, 100))
    assert compared_box(before, after, margin=8, align=32) == (slice(64, 224), slice(0, 128))
    assert compared_box(before, Scene(satellite=data, satellite_bands=("red",))) == (
        slice(10, 200),
        slice(30, 350),
    )
    second[:] = False
    assert compared_box(before, after) is None
    cut = crop(before, (slice(100, 200), slice(30, 100)))
    assert cut.satellite.shape == (1, 100, 70) and cut.satellite_valid.all()
