import pytest

from errors import ConfigError
from pipeline.config import load_config

GOOD = """
[grid]
crs = "EPSG:4547"
resolution = 0.5
tile_size = 512

[offices]
path = "offices.gpkg"

[[epochs]]
id = "2024Q1"
date = "2024-03-20"
[[epochs.sources]]
kind = "satellite"
path = "img/a_*.tif"
bands = { blue = 1, green = 2, red = 3, nir = 4 }

[[epochs]]
id = "2024Q2"
date = "2024-06-20"
[[epochs.sources]]
kind = "satellite"
path = ["img/b.tif"]

[run]
before = "2024Q1"
after = "2024Q2"
"""


def write(tmp_path, text, name="quarter.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_resolves_paths_relative_to_the_file(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a_1.tif", "a_2.tif", "b.tif"):
        (tmp_path / "img" / name).write_bytes(b"")
    config = load_config(write(tmp_path, GOOD))
    assert config.grid_spec.tile_size == 512 and config.grid_spec.halo == 64
    assert config.quarter == "2024Q2"
    assert config.work_dir == tmp_path / "work" and config.out_dir == tmp_path / "out"
    epoch = config.epoch("2024Q1")
    files = config.source_files("2024Q1", epoch.sources[0])
    assert [f.name for f in files] == ["a_1.tif", "a_2.tif"]
    assert list(epoch.sources[0].bands) == ["blue", "green", "red", "nir"]
    assert config.detect.min_area_m2 == 20


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.replace('crs = "EPSG:4547"\n', ""),
            r"\[grid\] crs is missing; add e\.g\. crs = \"EPSG:4547\"",
        ),
        (
            lambda s: s.replace('"EPSG:4547"', '"EPSG:12345678"'),
            r"\[grid\] crs = 'EPSG:12345678' is not a known CRS",
        ),
        (lambda s: s.replace('"EPSG:4547"', '"EPSG:4326"'), "not a projected CRS"),
        (lambda s: s.replace("resolution = 0.5", "resolution = -1"), r"\[grid\] resolution = -1"),
        (
            lambda s: s.replace('kind = "satellite"\npath = "img', 'kind = "lidar"\npath = "img'),
            r"epoch '2024Q1' source 1 kind = 'lidar' is not allowed",
        ),
        (
            lambda s: s.replace('after = "2024Q2"', 'after = "2024Q3"'),
            r"\[run\] after = '2024Q3' is not an epoch",
        ),
        (
            lambda s: s.replace("tile_size = 512", "tile_size = 512\ntilesize = 3"),
            r"\[grid\] tilesize is not a known key",
        ),
        (lambda s: s.replace("[offices]\npath", "[offices]\nfile"), r"\[offices\] path is missing"),
        (
            lambda s: s + '\n[[epochs]]\nid = "2024Q3"\ndate = "2024-09-01"\n',
            r"epoch '2024Q3' has no sources",
        ),
        (lambda s: s.replace("[grid]", "[grid"), "not valid TOML"),
    ],
)
def test_bad_config_gives_one_line_naming_key_and_fix(tmp_path, edit, message):
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_missing_source_file_names_the_pattern(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    epoch = config.epoch("2024Q2")
    with pytest.raises(
        ConfigError, match=r"epoch '2024Q2' satellite file 'img/b\.tif' does not exist"
    ):
        config.source_files("2024Q2", epoch.sources[0])
    with pytest.raises(ConfigError, match=r"'img/a_\*\.tif' matches no file"):
        config.source_files("2024Q1", config.epoch("2024Q1").sources[0])
