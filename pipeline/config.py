"""The quarter's configuration: a TOML document checked by pydantic, paths relative to the file.

``load_config(path)`` is the only entry point. Every problem becomes one :class:`ConfigError` line
naming the file, the key and the fix, e.g.::

    quarter.toml: [grid] crs is missing; add e.g. crs = "EPSG:4547"
"""

from __future__ import annotations

import glob
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from errors import ConfigError
from tiles import Grid

__all__ = ["Config", "EpochConfig", "SourceConfig", "SourceKind", "load_config"]

SourceKind = Literal["satellite", "drone", "dsm"]

#: Example values shown in "missing key" messages.
_EXAMPLES = {
    "grid.crs": 'crs = "EPSG:4547"',
    "grid.resolution": "resolution = 0.5",
    "offices.path": 'path = "offices.gpkg"',
    "run.before": 'before = "2023Q4"',
    "run.after": 'after = "2024Q1"',
    "epochs": "[[epochs]] with id, date and [[epochs.sources]]",
    "id": 'id = "2024Q1"',
    "date": 'date = "2024-03-20"',
    "kind": 'kind = "satellite"',
    "path": 'path = "imagery/scene.tif"',
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GridConfig(_Model):
    crs: str
    resolution: Annotated[float, Field(gt=0)]
    tile_size: Annotated[int, Field(ge=16, le=16384)] = 1024
    halo: Annotated[int, Field(ge=0)] = 64


class PathsConfig(_Model):
    work: str = "work"
    out: str = "out"
    register_path: str = Field("register.gpkg", alias="register")


class OfficesConfig(_Model):
    path: str
    code_field: str = "code"
    name_field: str = "name"


class PermitsConfig(_Model):
    path: str
    id_field: str = "permit_id"


class SourceConfig(_Model):
    kind: SourceKind
    path: str | list[str]
    bands: dict[str, Annotated[int, Field(ge=1)]] | None = None

    @property
    def patterns(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


class EpochConfig(_Model):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    date: str
    sources: list[SourceConfig] = []


class RunConfig(_Model):
    before: str
    after: str


class DetectConfig(_Model):
    min_area_m2: Annotated[float, Field(ge=0)] = 20.0
    model: str | None = None


class TasksConfig(_Model):
    permit_overlap: Annotated[float, Field(gt=0, le=1)] = 0.5
    key_case_area_m2: Annotated[float, Field(gt=0)] = 1000.0
    key_case_repeats: Annotated[int, Field(ge=1)] = 1
    cloud_overlap: Annotated[float, Field(gt=0, le=1)] = 0.5
    water_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    deadline_days: Annotated[int, Field(ge=1)] = 60


class Config(_Model):
    """The whole document; ``root`` is the folder of the config file (paths resolve against it)."""

    grid: GridConfig
    paths: PathsConfig = PathsConfig()
    offices: OfficesConfig
    permits: PermitsConfig | None = None
    epochs: list[EpochConfig]
    run: RunConfig | None = None
    detect: DetectConfig = DetectConfig()
    tasks: TasksConfig = TasksConfig()
    root: Path = Path(".")
    file: Path = Path("quarter.toml")

    @field_validator("epochs")
    @classmethod
    def _unique_epochs(cls, epochs: list[EpochConfig]) -> list[EpochConfig]:
        ids = [e.id for e in epochs]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"epoch id {dup[0]!r} is used twice; give every [[epochs]] its own id")
        return epochs

    @model_validator(mode="after")
    def _run_epochs_exist(self) -> Config:
        if self.run is not None:
            ids = [e.id for e in self.epochs]
            for key in ("before", "after"):
                value = getattr(self.run, key)
                if value not in ids:
                    raise ValueError(
                        f"[run] {key} = {value!r} is not an epoch (epochs: {', '.join(ids)})"
                    )
        return self

    # -- derived ---------------------------------------------------------------------------
    @property
    def grid_spec(self) -> Grid:
        return Grid(
            crs=self.grid.crs,
            resolution=self.grid.resolution,
            tile_size=self.grid.tile_size,
            halo=self.grid.halo,
        )

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path from the config, made absolute against the config's folder."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else self.root / p

    @property
    def work_dir(self) -> Path:
        return self.resolve(self.paths.work)

    @property
    def out_dir(self) -> Path:
        return self.resolve(self.paths.out)

    def epoch(self, epoch_id: str) -> EpochConfig:
        for e in self.epochs:
            if e.id == epoch_id:
                return e
        ids = ", ".join(e.id for e in self.epochs)
        raise ConfigError(
            f"{self.file}: no epoch {epoch_id!r} (epochs: {ids}); check --epoch or [run]"
        )

    def require_run(self) -> RunConfig:
        if self.run is None:
            raise ConfigError(
                f"{self.file}: [run] is missing; add [run] with before = and after = epoch ids"
            )
        return self.run

    @property
    def quarter(self) -> str:
        """The quarter's ID: the after epoch's ID."""
        return self.require_run().after

    def source_files(self, epoch_id: str, source: SourceConfig) -> list[Path]:
        """Expand a source's file, glob or list into existing files, in a stable order."""
        files: list[Path] = []
        for pattern in source.patterns:
            full = self.resolve(pattern)
            if glob.has_magic(str(full)):
                matches = sorted(Path(p) for p in glob.glob(str(full)))
                if not matches:
                    raise ConfigError(
                        f"{self.file}: epoch {epoch_id!r} {source.kind} path {pattern!r} matches "
                        "no file; fix the pattern (relative to the config file)"
                    )
                files.extend(matches)
            elif full.is_file():
                files.append(full)
            else:
                raise ConfigError(
                    f"{self.file}: epoch {epoch_id!r} {source.kind} file {pattern!r} does not exist "
                    f"({full}); fix the path (relative to the config file)"
                )
        return files


def load_config(path: str | os.PathLike) -> Config:
    """Read and check a quarter's TOML configuration.

    Raises
    ------
    ConfigError
        One line naming the file, key and fix: missing file, bad TOML, missing key, wrong type,
        unknown CRS, an epoch without sources…
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; pass the path of a quarter.toml"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    try:
        config = Config.model_validate({**raw, "root": path.resolve().parent, "file": path})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, raw)}") from None
    try:
        config.grid_spec  # noqa: B018 - validates the CRS and sizes now
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for epoch in config.epochs:
        if not epoch.sources:
            raise ConfigError(
                f"{path}: epoch {epoch.id!r} has no sources; add [[epochs.sources]] with kind and path"
            )
    return config


def _describe(exc: ValidationError, raw: dict[str, Any]) -> str:
    """The first validation error as '[section] key: problem; fix'."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = _key_name(loc, raw)
    kind = err["type"]
    if kind == "missing":
        example = _EXAMPLES.get(".".join(x for x in loc if not x.isdigit()), None) or _EXAMPLES.get(
            loc[-1]
        )
        fix = f"add e.g. {example}" if example else "add it"
        return f"{key} is missing; {fix}"
    if kind == "extra_forbidden":
        return f"{key} is not a known key; remove it or check its spelling (see the README)"
    if kind == "literal_error":
        return f"{key} = {err.get('input')!r} is not allowed; {err['msg'].lower()}"
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    return f"{key} = {err.get('input')!r}: {err['msg'].lower()}; fix the value"


def _key_name(loc: list[str], raw: dict[str, Any]) -> str:
    """Render a pydantic location as the TOML reader would see it, e.g. '[epochs][1] sources'."""
    if not loc:
        return "config"
    section, rest = loc[0], loc[1:]
    if section == "epochs" and rest and rest[0].isdigit():
        i = int(rest[0])
        epochs = raw.get("epochs") or []
        name = epochs[i].get("id", i) if i < len(epochs) and isinstance(epochs[i], dict) else i
        rest = rest[1:]
        if rest[:1] == ["sources"] and len(rest) > 1 and rest[1].isdigit():
            where = f"epoch {name!r} source {int(rest[1]) + 1}"
            return f"{where} {rest[2]}" if len(rest) > 2 else where
        return f"epoch {name!r} {' '.join(rest)}".strip()
    if not rest:
        return (
            f"[{section}]"
            if isinstance(raw.get(section), dict) or section in _SECTIONS
            else section
        )
    return f"[{section}] {'.'.join(rest)}"


_SECTIONS = {"grid", "paths", "offices", "permits", "run", "detect", "tasks"}
