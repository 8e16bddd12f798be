"""Quarter configs for the tests: the TOML an analyst would write, from a few arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

#: Source of a quarter: (kind, path, bands) with bands a name -> band number mapping, or None
#: for the file's own band descriptions.
Source = tuple[str, str, Mapping[str, int] | None]


def write_quarter(
    folder: Path,
    epochs: Mapping[str, Sequence[Source]],
    *,
    crs: str = "EPSG:4547",
    resolution: float = 0.5,
    tile_size: int = 64,
    halo: int = 8,
    offices: Mapping[str, str] | None = None,
    run: tuple[str, str] | None = None,
    extra: str = "",
) -> Path:
    """Write ``folder/quarter.toml`` and return its path.

    Epochs are dated a quarter apart from 2024-03-20 in the order given; ``run`` defaults to
    the first two epochs (the only one twice); ``offices`` adds keys to ``[offices]`` (whose
    path is ``offices.gpkg``); ``extra`` is appended as it is (e.g. a ``[detect]`` table).
    """
    lines = [
        "[grid]",
        f'crs = "{crs}"',
        f"resolution = {resolution}",
        f"tile_size = {tile_size}",
        f"halo = {halo}",
        "[offices]",
        'path = "offices.gpkg"',
        *(f'{key} = "{value}"' for key, value in (offices or {}).items()),
    ]
    for n, (epoch, sources) in enumerate(epochs.items()):
        lines += [
            "[[epochs]]",
            f'id = "{epoch}"',
            f'date = "{2024 + n // 4}-{3 * (n % 4) + 3:02d}-20"',
        ]
        for kind, path, bands in sources:
            lines += ["[[epochs.sources]]", f'kind = "{kind}"', f'path = "{path}"']
            if bands is not None:
                lines.append(
                    "bands = { " + ", ".join(f"{k} = {v}" for k, v in bands.items()) + " }"
                )
    ids = list(epochs)
    before, after = run or (ids[0], ids[1] if len(ids) > 1 else ids[0])
    lines += ["[run]", f'before = "{before}"', f'after = "{after}"', extra]
    path = Path(folder) / "quarter.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
