"""The command line: exit codes, one-line errors, and that earlier outputs survive bad input."""

import pytest
from click.testing import CliRunner

from cli import main

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "run", "ingest", "changes", "worklists"):
        assert command in result.output


def test_missing_config_exits_2_with_one_line(tmp_path):
    result = runner.invoke(main, ["run", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.toml: config file not found" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "toml, expected",
    [
        (
            '[grid]\nresolution = 0.5\n[offices]\npath = "o.gpkg"\n[[epochs]]\nid = "A"\ndate = "x"\n',
            "[grid] crs is missing",
        ),
        (
            '[grid]\ncrs = "EPSG:0"\nresolution = 0.5\n[offices]\npath = "o.gpkg"\n[[epochs]]\nid = "A"\n'
            'date = "x"\n[[epochs.sources]]\nkind = "dsm"\npath = "d.tif"\n',
            "is not a known CRS",
        ),
    ],
)
def test_bad_config_exits_2(tmp_path, toml, expected):
    path = tmp_path / "q.toml"
    path.write_text(toml)
    result = runner.invoke(main, ["ingest", str(path), "--epoch", "A"])
    assert result.exit_code == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_executor_is_a_usage_error(tmp_path):
    result = runner.invoke(main, ["run", str(tmp_path / "q.toml"), "--executor", "threads"])
    assert result.exit_code == 2 and "threads" in result.output
