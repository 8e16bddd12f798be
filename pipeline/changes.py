"""Changes: diff the before and after epochs tile by tile into suspect polygons.

Workers read a tile pair from the two epochs' tile stores, run :func:`detect.detect_changes` and
return plain tables (geometry as WKB); the driver gathers them, merges the rare object that two
tiles both reported, numbers the suspects and writes ``<work>/changes/<before>__<after>.gpkg``
with layers ``suspects``, ``tiles`` (footprint and QA per tile) and ``clouds`` (where cloud,
haze or cloud shadow kept any tile, halo included, from comparing the epochs; one polygon per
connected part).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from detect import DetectParams, Scene, detect_changes
from detect.learn import Model, detect_changes_learned
from errors import ConfigError, InputError, NoOverlapError
from tiles import Grid, TileId, read_tile

from .atomic import write_json, write_layers
from .config import Config
from .executors import Executor
from .ingest import KINDS, EpochIndex, load_index
from .learn import load_model

__all__ = ["SUSPECT_COLUMNS", "ChangeSet", "detect_quarter", "changes_path", "read_changes"]

SUSPECT_COLUMNS = ["suspect_id", "tile", "change_type", "area_m2", "height_gain_m", "score"]


@dataclass(frozen=True)
class ChangeSet:
    """What the changes stage produced, all in the grid CRS: suspects, per-tile QA and the
    clouds (column ``area_m2``)."""

    suspects: gpd.GeoDataFrame
    tiles: gpd.GeoDataFrame
    clouds: gpd.GeoDataFrame


@dataclass(frozen=True)
class _PairJob:
    grid: Grid
    tile: TileId
    before: dict[str, str]  # kind -> tile file
    after: dict[str, str]
    params: DetectParams
    result_path: str  # where the worker records the tile's result
    signature: str  # inputs and parameters the result was made from
    model: str | None = None  # file of the learned scorer of [detect] model, if any


def changes_path(config: Config) -> Path:
    run = config.require_run()
    return config.work_dir / "changes" / f"{run.before}__{run.after}.gpkg"


def detect_params(config: Config) -> DetectParams:
    return DetectParams(min_area_m2=config.detect.min_area_m2)


def detect_model(config: Config) -> tuple[Model | None, str]:
    """The learned scorer of ``[detect] model`` (None without one) and a token of its file."""
    if config.detect.model is None:
        return None, ""
    path = config.resolve(config.detect.model)
    try:
        model = load_model(path)
    except InputError as exc:
        raise ConfigError(f"{config.file}: [detect] model: {exc}") from None
    stat = path.stat()
    return model, f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def detect_quarter(
    config: Config, *, executor: Executor = Executor(), resume: bool = False
) -> ChangeSet:
    """Detect suspects for ``[run].before → [run].after`` on every tile both epochs cover.

    Every tile's result is recorded under ``<work>/changes/<before>__<after>/`` as it finishes;
    with ``resume`` the tiles already finished from the same inputs and parameters are not
    detected again.
    """
    run = config.require_run()
    grid = config.grid_spec
    work = config.work_dir
    before, after = load_index(work, run.before), load_index(work, run.after)
    for idx in (before, after):
        if not idx.tiles:
            raise NoOverlapError(
                f"{config.file}: epoch {idx.epoch!r} has no ingested tiles; run `tuban ingest "
                f"{config.file} --epoch {idx.epoch}` first"
            )
    _check_comparable(config, before, after)
    params = detect_params(config)
    model, model_token = detect_model(config)  # checked here, loaded again once per worker
    model_path = None if model is None else str(config.resolve(config.detect.model))
    tile_dir = changes_path(config).with_suffix("")
    jobs = [
        _PairJob(
            grid,
            TileId.parse(name),
            _files(before, name, work),
            _files(after, name, work),
            params,
            str(tile_dir / f"{name}.json"),
            _pair_signature(before.tiles[name], after.tiles[name], params, model_token),
            model_path,
        )
        for name in sorted(set(before.tiles) & set(after.tiles))
    ]
    if not jobs:
        raise NoOverlapError(
            f"{config.file}: epochs {run.before!r} and {run.after!r} share no tile; check their sources"
        )
    done = [(job, _finished(job) if resume else None) for job in jobs]
    todo = [job for job, result in done if result is None]
    results = list(executor.map(_detect_tile, todo, desc=f"changes {run.before}→{run.after}"))
    results += [(job, result) for job, result in done if result is not None]
    ordered = sorted(results, key=lambda pair: pair[0].tile)
    suspects = _gather_suspects([r for _, (r, _, _) in ordered], grid)
    tiles = _tiles_frame(grid, [(job, qa) for job, (_, qa, _) in ordered], before, after)
    clouds = _clouds([cloud for _, (_, _, cloud) in ordered], grid)
    change_set = ChangeSet(suspects=suspects, tiles=tiles, clouds=clouds)
    write_layers(changes_path(config), {"suspects": suspects, "tiles": tiles, "clouds": clouds})
    return change_set


def read_changes(config: Config) -> ChangeSet:
    """The suspects and tile QA written by :func:`detect_quarter`."""
    path = changes_path(config)
    if not path.exists():
        raise NoOverlapError(f"{path} does not exist; run `tuban changes {config.file}` first")
    suspects = gpd.read_file(path, layer="suspects")
    if "clouds" in set(pyogrio.list_layers(path)[:, 0]):
        clouds = gpd.read_file(path, layer="clouds")
    else:  # written before clouds were recorded
        clouds = _clouds([], config.grid_spec)
    return ChangeSet(suspects=suspects, tiles=gpd.read_file(path, layer="tiles"), clouds=clouds)


def _files(index: EpochIndex, tile: str, work: Path) -> dict[str, str]:
    store = work / "epochs" / index.epoch
    return {kind: str(store / rec["file"]) for kind, rec in index.tiles[tile].items()}


def _scene(files: dict[str, str]) -> Scene:
    """Read a tile's stored layers into a :class:`detect.Scene`, in their stored dtypes (8- and
    16-bit imagery need no range check there, see :func:`detect.scene.layers`)."""
    layers: dict = {}
    if "satellite" in files:
        data, valid, names = read_tile(files["satellite"])
        layers.update(satellite=data, satellite_bands=names, satellite_valid=valid)
    if "drone" in files:
        data, valid, names = read_tile(files["drone"])
        order = [names.index(n) for n in ("red", "green", "blue")]
        layers.update(drone=data[order], drone_valid=valid)
    if "dsm" in files:
        data, valid, _ = read_tile(files["dsm"])
        layers.update(dsm=data[0], dsm_valid=valid)
    return Scene(**layers)


def _bands_by_kind(index: EpochIndex) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for kinds in index.tiles.values():
        for kind, record in kinds.items():
            out.setdefault(kind, set()).update(record["bands"])
    return out


def _check_comparable(config: Config, before: EpochIndex, after: EpochIndex) -> None:
    """Refuse epochs that share no kind of layer with a band in common."""
    a, b = _bands_by_kind(before), _bands_by_kind(after)
    if any(a[kind] & b[kind] for kind in a.keys() & b.keys()):
        return

    def describe(bands: dict[str, set[str]]) -> str:
        return "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(bands.items()))

    raise InputError(
        f"{config.file}: epochs {before.epoch!r} ({describe(a)}) and {after.epoch!r} "
        f"({describe(b)}) have no bands in common; map the same band names in both epochs"
    )


def _pair_signature(before: dict, after: dict, params: DetectParams, model: str) -> str:
    payload = json.dumps(
        [
            {k: v["signature"] for k, v in before.items()},
            {k: v["signature"] for k, v in after.items()},
            repr(params),
            model,
        ],
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


def _finished(job: _PairJob) -> tuple[pd.DataFrame, dict, bytes] | None:
    """A tile's recorded result if it was made from the same inputs and parameters."""
    path = Path(job.result_path)
    if not path.exists():
        return None
    done = json.loads(path.read_text(encoding="utf-8"))
    if done.get("signature") != job.signature or "cloud" not in done:
        return None
    table = pd.DataFrame(done["objects"])
    if len(table):
        table["geometry"] = table["geometry"].map(bytes.fromhex)
    return table, done["qa"], bytes.fromhex(done["cloud"])


def _detect_tile(job: _PairJob) -> tuple[pd.DataFrame, dict, bytes]:
    """Worker: detect on one tile pair; record and return its objects (WKB), its QA and
    its cloud outline (WKB)."""
    before, after = _scene(job.before), _scene(job.after)
    transform, core = job.grid.transform(job.tile, halo=True), job.grid.core_slices()
    if job.model is None:
        result = detect_changes(before, after, transform=transform, params=job.params, core=core)
    else:
        result = detect_changes_learned(
            before,
            after,
            model=_worker_model(job.model),
            transform=transform,
            params=job.params,
            core=core,
        )
    table = pd.DataFrame(result.to_records())
    if len(table):
        table["geometry"] = shapely.to_wkb(np.asarray(table["geometry"]))
    table.insert(0, "tile", job.tile.name)
    qa = {k: _plain(v) for k, v in result.qa.items()}
    cloud = shapely.to_wkb(result.cloud)
    objects = table.assign(geometry=table["geometry"].map(bytes.hex)) if len(table) else table
    write_json(
        job.result_path,
        {
            "signature": job.signature,
            "qa": qa,
            "objects": objects.to_dict(orient="records"),
            "cloud": cloud.hex(),
        },
    )
    return table, qa, cloud


def _worker_model(path: str) -> Model:
    """The learned scorer in ``path``, read once per worker while the file is unchanged (a
    tile job names the file rather than carrying the classifier)."""
    stat = Path(path).stat()
    return _load_model(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=2)
def _load_model(path: str, size: int, mtime_ns: int) -> Model:
    return load_model(path)


def _plain(value):
    """numpy scalars as Python numbers, for JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _gather_suspects(tables: list[pd.DataFrame], grid: Grid) -> gpd.GeoDataFrame:
    tables = [t for t in tables if len(t)]
    if not tables:
        return gpd.GeoDataFrame(
            {
                c: pd.Series(
                    dtype="float64" if c in ("area_m2", "height_gain_m", "score") else "object"
                )
                for c in SUSPECT_COLUMNS
            },
            geometry=gpd.GeoSeries([], crs=grid.rio_crs),
        )
    df = pd.concat(tables, ignore_index=True)
    gdf = gpd.GeoDataFrame(df, geometry=shapely.from_wkb(df["geometry"]), crs=grid.rio_crs)
    gdf = _merge_seam_duplicates(gdf)
    gdf["suspect_id"] = (
        gdf["tile"] + "-" + (gdf.groupby("tile").cumcount() + 1).map("{:04d}".format)
    )
    extra = [c for c in gdf.columns if c not in SUSPECT_COLUMNS and c != "geometry"]
    return gdf[SUSPECT_COLUMNS + extra + ["geometry"]].reset_index(drop=True)


def _clouds(outlines: list[bytes], grid: Grid) -> gpd.GeoDataFrame:
    """The tiles' cloud outlines joined, one polygon per connected part."""
    whole = shapely.union_all(shapely.from_wkb(outlines)) if outlines else shapely.Polygon()
    parts = [p for p in shapely.get_parts(whole) if not p.is_empty]
    return gpd.GeoDataFrame(
        {"area_m2": pd.Series(shapely.area(parts), dtype="float64")},
        geometry=gpd.GeoSeries(parts, crs=grid.rio_crs),
    )


def _merge_seam_duplicates(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Union objects from different tiles that overlap (a safety net behind the ownership rule)."""
    left, right = gdf.sindex.query(gdf.geometry, predicate="intersects")
    pairs = (left < right) & (gdf["tile"].to_numpy()[left] != gdf["tile"].to_numpy()[right])
    left, right = left[pairs], right[pairs]
    if not len(left):
        return gdf
    n = len(gdf)
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    keep = gdf.assign(_group=group, _area=gdf.geometry.area).sort_values(
        ["_group", "_area"], ascending=[True, False]
    )
    merged = keep.groupby("_group", sort=False).first()
    unions = keep.groupby("_group", sort=False)["geometry"].agg(
        lambda g: shapely.union_all(np.asarray(g))
    )
    merged["score"] = keep.groupby("_group", sort=False)["score"].max()
    out = gpd.GeoDataFrame(
        merged.drop(columns=["geometry", "_area"]), geometry=unions.values, crs=gdf.crs
    )
    out["area_m2"] = out.geometry.area
    return out.sort_values("tile", kind="stable").reset_index(drop=True)


def _tiles_frame(
    grid: Grid, rows: list[tuple[_PairJob, dict]], before: EpochIndex, after: EpochIndex
) -> gpd.GeoDataFrame:
    records = []
    for job, qa in rows:
        rec: dict = {"tile": job.tile.name, "row": job.tile.row, "col": job.tile.col}
        for label, idx in (("before", before), ("after", after)):
            for kind in KINDS:
                entry = idx.tiles.get(job.tile.name, {}).get(kind)
                rec[f"{label}_{kind}_valid"] = float(entry["valid_fraction"]) if entry else 0.0
            entry = idx.tiles.get(job.tile.name, {}).get("satellite") or {}
            rec[f"{label}_cloud_share"] = float(entry.get("cloud_share", 0.0))
        rec.update({k: v for k, v in qa.items() if isinstance(v, (int, float, bool, str))})
        records.append(rec)
    geoms = [shapely.box(*grid.bounds(job.tile)) for job, _ in rows]
    return gpd.GeoDataFrame(records, geometry=geoms, crs=grid.rio_crs)
