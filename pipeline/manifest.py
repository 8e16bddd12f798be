"""``manifest.json``: what a quarter's outputs were made from, with what, and how long it took.

Input checksums (SHA-256) are cached in ``<work>/checksums.json`` by path, size and mtime, so a
county's imagery is hashed once, not on every run. :func:`pipeline.batch.run` takes them
(:func:`input_checksums`) in a thread while the stages run, so hashing a new quarter's imagery
costs no time of its own.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from .atomic import write_json
from .config import Config
from .executors import Executor

__all__ = ["input_checksums", "input_files", "write_manifest"]

_LIBRARIES = (
    "tuban",
    "numpy",
    "scipy",
    "scikit-image",
    "scikit-learn",
    "rasterio",
    "pyproj",
    "shapely",
    "geopandas",
    "pyogrio",
    "fiona",
)


def input_files(config: Config) -> list[Path]:
    """Every file the quarter reads: config, offices, permits and both epochs' imagery."""
    files = [config.file.resolve(), config.resolve(config.offices.path)]
    if config.permits is not None:
        files.append(config.resolve(config.permits.path))
    run = config.require_run()
    for epoch_id in (run.before, run.after):
        for source in config.epoch(epoch_id).sources:
            files.extend(config.source_files(epoch_id, source))
    return files


def _sha256(path: Path, cache: dict) -> str:
    stat = path.stat()
    key = str(path.resolve())
    hit = cache.get(key)
    if hit and hit["size"] == stat.st_size and hit["mtime_ns"] == stat.st_mtime_ns:
        return hit["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    return cache[key]["sha256"]


def input_checksums(config: Config) -> list[dict]:
    """``path``, ``size`` and ``sha256`` of every :func:`input_files`, through the cache."""
    cache_path = config.work_dir / "checksums.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    inputs = [
        {"path": str(p), "size": p.stat().st_size, "sha256": _sha256(p, cache)}
        for p in input_files(config)
    ]
    write_json(cache_path, cache)
    return inputs


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import rasterio

    out["gdal"] = rasterio.__gdal_version__
    return out


def write_manifest(
    config: Config,
    path: Path,
    *,
    timings: dict[str, float],
    executor: Executor,
    counts: dict[str, int],
    inputs: list[dict] | None = None,
) -> dict:
    """Write the manifest of a finished batch and return it; ``inputs`` are the
    :func:`input_checksums` when already taken."""
    manifest = {
        "quarter": config.quarter,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": input_checksums(config) if inputs is None else inputs,
        "config": config.model_dump(mode="json", by_alias=True, exclude={"root", "file"}),
        "executor": {"name": executor.name, "workers": executor.n_workers},
        "versions": _versions(),
        "counts": counts,
        "timings_s": timings,
    }
    write_json(path, manifest)
    return manifest
