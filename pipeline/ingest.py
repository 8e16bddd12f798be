"""Ingest: put one epoch's sources onto the grid, once, as a tile store that later quarters reuse.

Layout under ``[paths].work``::

    epochs/<epoch>/<kind>/<tile>.tif   haloed tile, tiled + ZSTD GeoTIFF with an internal mask
                                       (none when every pixel is valid)
    epochs/<epoch>/<kind>/<tile>.json  the tile's record, written once the tile is complete
    epochs/<epoch>/index.json          per tile and kind: file, bounds, valid fraction, cloud share
                                       (satellite), sources used, input signature, file SHA-256

Each tile's record is written beside it as ``<tile>.json`` once the tile is complete, so an
interrupted ingest resumes where it stopped. A tile is rewritten only when its signature (grid, band mapping and the size and mtime of every
source file touching it) changed, so re-ingesting an unchanged epoch does nothing and a changed
file re-ingests only the tiles it covers. Tiles and the index are written to a temporary file and
renamed, so an interrupted ingest never leaves a half-written tile that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detect.qa import cloud_share
from errors import ConfigError, InputError, NoOverlapError
from tiles import Bounds, Grid, SourceInfo, TileId, describe_source, read_onto_tile, write_tile

from .atomic import write_json
from .config import Config, SourceKind
from .executors import Executor
from .vectors import read_offices

__all__ = [
    "KINDS",
    "EpochIndex",
    "KindPlan",
    "area_of_interest",
    "ingest_epoch",
    "ingest_epochs",
    "load_index",
    "plan_epoch",
]

KINDS: tuple[SourceKind, ...] = ("satellite", "drone", "dsm")
_COLOR_NAMES = {"red": "red", "green": "green", "blue": "blue", "gray": "pan"}


@dataclass(frozen=True)
class KindPlan:
    """One kind of source in one epoch: its files (in priority order) and the bands to read."""

    kind: SourceKind
    parts: tuple[
        tuple[tuple[SourceInfo, ...], tuple[int, ...]], ...
    ]  # (files, band indexes) per source
    band_names: tuple[str, ...]

    @property
    def files(self) -> tuple[SourceInfo, ...]:
        return tuple(f for files, _ in self.parts for f in files)

    @property
    def bounds(self) -> Bounds:
        bounds = [f.bounds for f in self.files]
        out = bounds[0]
        for b in bounds[1:]:
            out = out.union(b)
        return out


@dataclass(frozen=True)
class _TileJob:
    grid: Grid
    tile: TileId
    kind: KindPlan
    path: str
    signature: str


@dataclass
class EpochIndex:
    """The tile store index of one epoch: ``tiles[tile_name][kind] -> record``."""

    epoch: str
    tiles: dict[str, dict[str, dict]] = field(default_factory=dict)

    def path(self, work: Path) -> Path:
        return work / "epochs" / self.epoch / "index.json"


def area_of_interest(config: Config) -> Bounds:
    """The offices' extent in grid CRS metres: the area every stage works on."""
    offices = read_offices(
        config.resolve(config.offices.path),
        code_field=config.offices.code_field,
        name_field=config.offices.name_field,
        crs=config.grid_spec.rio_crs,
    )
    return Bounds(*offices.total_bounds)


def plan_epoch(config: Config, epoch_id: str) -> dict[SourceKind, KindPlan]:
    """Describe every source file of an epoch and check it can be read as configured."""
    grid = config.grid_spec
    epoch = config.epoch(epoch_id)
    grouped: dict[SourceKind, list] = {}
    names_of: dict[SourceKind, tuple[str, ...]] = {}
    for source in epoch.sources:
        files = tuple(describe_source(p, grid=grid) for p in config.source_files(epoch_id, source))
        indexes, names = _band_mapping(config, epoch_id, source.kind, source.bands, files[0])
        for f in files[1:]:
            if max(indexes) > f.count:
                raise InputError(
                    f"{f.path} has {f.count} band(s) but band {max(indexes)} is mapped; "
                    f"fix epoch {epoch_id!r} {source.kind} bands"
                )
        if source.kind in names_of and names_of[source.kind] != names:
            raise ConfigError(
                f"{config.file}: epoch {epoch_id!r} has {source.kind} sources with different bands "
                f"({', '.join(names_of[source.kind])} vs {', '.join(names)}); map the same bands"
            )
        names_of[source.kind] = names
        grouped.setdefault(source.kind, []).append((files, indexes))
    return {
        kind: KindPlan(kind=kind, parts=tuple(parts), band_names=names_of[kind])
        for kind, parts in grouped.items()
    }


def _band_mapping(
    config: Config,
    epoch_id: str,
    kind: SourceKind,
    bands: dict[str, int] | None,
    first: SourceInfo,
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    where = f"{config.file}: epoch {epoch_id!r} {kind}"
    if kind == "dsm":
        if bands and len(bands) != 1:
            raise ConfigError(f"{where} maps {len(bands)} bands; a DSM has one (height in metres)")
        if not bands and first.count != 1:
            raise InputError(
                f"{first.path} is a DSM with {first.count} bands; give a single-band height raster "
                "or set bands = {{ height = N }}"
            )
        index = next(iter(bands.values())) if bands else 1
        if index > first.count:
            raise InputError(
                f"{first.path} has {first.count} band(s) but band {index} is mapped; fix the bands"
            )
        return (index,), ("height",)
    if bands:
        bad = {n: i for n, i in bands.items() if i > first.count}
        if bad:
            name, i = next(iter(bad.items()))
            raise InputError(
                f"{first.path} has {first.count} band(s) but {name} = {i} is mapped; fix "
                f"epoch {epoch_id!r} {kind} bands"
            )
        return tuple(bands.values()), tuple(bands)
    # No mapping: use the file's colour interpretation.
    named = {
        _COLOR_NAMES[ci]: i + 1 for i, ci in enumerate(first.colorinterp) if ci in _COLOR_NAMES
    }
    want = ("red", "green", "blue")
    if all(n in named for n in want):
        return tuple(named[n] for n in want), want
    raise ConfigError(
        f"{where}: {first.path} has no red/green/blue colour interpretation "
        f"({', '.join(first.colorinterp)}); set bands = {{ blue = 1, green = 2, red = 3, nir = 4 }}"
    )


def ingest_epoch(config: Config, epoch_id: str, *, executor: Executor = Executor()) -> EpochIndex:
    """Ingest an epoch's sources onto the grid (only tiles whose inputs changed are written).

    Returns
    -------
    EpochIndex
        The index of the epoch's tile store, also saved as ``epochs/<epoch>/index.json``.
    """
    return ingest_epochs(config, [epoch_id], executor=executor)[epoch_id]


def ingest_epochs(
    config: Config, epoch_ids: Sequence[str], *, executor: Executor = Executor()
) -> dict[str, EpochIndex]:
    """:func:`ingest_epoch` of several epochs, their tiles in one pass over the workers (no
    worker waits for the last tiles of one epoch before the next begins)."""
    epoch_ids = list(dict.fromkeys(epoch_ids))  # each once
    indexes: dict[str, EpochIndex] = {}
    epoch_of: dict[str, str] = {}  # job path -> epoch
    jobs: list[_TileJob] = []
    for epoch_id in epoch_ids:
        indexes[epoch_id], todo = _plan(config, epoch_id)
        epoch_of.update((job.path, epoch_id) for job in todo)
        jobs += todo
    desc = f"ingest {', '.join(epoch_ids)}"
    for job, record in executor.map(_ingest_tile, jobs, desc=desc, runs=True):
        if record is not None:
            index = indexes[epoch_of[job.path]]
            index.tiles.setdefault(job.tile.name, {})[job.kind.kind] = record
    for index in indexes.values():
        index.tiles = dict(sorted(index.tiles.items()))
        _write_index(index, config.work_dir)
    return indexes


def _plan(config: Config, epoch_id: str) -> tuple[EpochIndex, list[_TileJob]]:
    """The epoch's index of the tiles already finished, and the jobs of the others."""
    grid = config.grid_spec
    aoi = area_of_interest(config)
    plans = plan_epoch(config, epoch_id)
    store = config.work_dir / "epochs" / epoch_id
    for plan in plans.values():
        if plan.bounds.intersection(aoi) is None:
            raise NoOverlapError(
                f"{plan.files[0].path}: epoch {epoch_id!r} {plan.kind} does not overlap the offices "
                f"in {config.offices.path}; check its CRS and the offices file"
            )
    index = EpochIndex(epoch=epoch_id)
    jobs: list[_TileJob] = []
    for tile in grid.tiles(aoi):
        tile_bounds = grid.bounds(tile, halo=True)
        for kind, plan in plans.items():
            touching = _touching(plan, tile_bounds)
            if touching is None:
                continue
            signature = _signature(grid, tile, touching)
            path = store / kind / f"{tile.name}.tif"
            done = _finished(path, signature)
            if done is not None:
                if done:
                    index.tiles.setdefault(tile.name, {})[kind] = done
                continue
            jobs.append(_TileJob(grid, tile, touching, str(path), signature))
    return index, jobs


def _touching(plan: KindPlan, bounds: Bounds) -> KindPlan | None:
    parts = tuple(
        (files, idx)
        for files, idx in (
            (tuple(f for f in files if f.bounds.intersection(bounds) is not None), idx)
            for files, idx in plan.parts
        )
        if files
    )
    return KindPlan(plan.kind, parts, plan.band_names) if parts else None


def _signature(grid: Grid, tile: TileId, plan: KindPlan) -> str:
    payload = json.dumps(
        [
            grid.crs,
            grid.resolution,
            grid.tile_size,
            grid.halo,
            tile,
            plan.band_names,
            [[[f.signature for f in files], idx] for files, idx in plan.parts],
        ],
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


def _ingest_tile(job: _TileJob) -> dict | None:
    """Read one tile of one kind from its sources and write it to the store (worker side)."""
    data = valid = None
    used: list[str] = []
    for files, indexes in job.kind.parts:
        d, v, u = read_onto_tile(files, job.grid, job.tile, bands=indexes)
        if data is None:
            data, valid = d, v
        else:
            take = v & ~valid
            np.copyto(data, d, where=take, casting="unsafe")
            valid |= take
        used += u
    assert data is not None and valid is not None
    record: dict = {}
    core = job.grid.core_slices()
    if valid.any():
        write_tile(
            job.path, data, valid, grid=job.grid, tile=job.tile, band_names=job.kind.band_names
        )
        record = {
            "file": os.path.relpath(job.path, Path(job.path).parents[1]),
            "bands": list(job.kind.band_names),
            "dtype": str(data.dtype),
            "valid_fraction": round(float(valid[core].mean()), 4),
            "sources": used,
            "signature": job.signature,
            "bounds": list(job.grid.bounds(job.tile)),
            "sha256": hashlib.sha256(Path(job.path).read_bytes()).hexdigest(),
        }
        if job.kind.kind == "satellite":
            record["cloud_share"] = round(
                cloud_share(
                    data[(slice(None), *core)],
                    job.kind.band_names,
                    valid[core],
                    pixel_size=job.grid.resolution,
                ),
                4,
            )
    else:
        Path(job.path).unlink(missing_ok=True)
    # The sidecar is written last: its presence marks the tile as finished.
    write_json(Path(job.path).with_suffix(".json"), {"signature": job.signature, "record": record})
    return record or None


def _finished(path: Path, signature: str) -> dict | None:
    """The record of a tile finished with this signature ({} when it had no valid pixel), else None."""
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return None
    done = json.loads(sidecar.read_text(encoding="utf-8"))
    if done.get("signature") != signature or (done["record"] and not path.exists()):
        return None
    return done["record"]


def load_index(work: Path, epoch_id: str) -> EpochIndex:
    """The stored index of an epoch (empty when the epoch was never ingested)."""
    path = work / "epochs" / epoch_id / "index.json"
    if not path.exists():
        return EpochIndex(epoch=epoch_id)
    data = json.loads(path.read_text(encoding="utf-8"))
    return EpochIndex(epoch=epoch_id, tiles=data.get("tiles", {}))


def _write_index(index: EpochIndex, work: Path) -> None:
    write_json(index.path(work), {"epoch": index.epoch, "tiles": index.tiles})
