"""Score a quarter's tasks against planted (or surveyed) changes, object by object.

The rule, the same in tests, the demo and ``benchmarks/demo_accuracy.py``:

* a task is **correct** if ≥ 50 % of its area lies on a non-permitted truth change;
* a truth change is **found** if tasks cover ≥ 50 % of its area;
* a permitted truth change is **issued** (a failure) if tasks cover ≥ 50 % of its area.

:func:`score_by_cover` scores the drone block (where both epochs have a DSM) and the area the
satellite alone covers apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

__all__ = [
    "COVERS",
    "ObjectScore",
    "drone_footprint",
    "score_by_cover",
    "score_demo",
    "score_demo_by_cover",
    "score_tasks",
]

_SHARE = 0.5


@dataclass(frozen=True)
class ObjectScore:
    planted: int
    found: int
    tasks: int
    correct: int
    permitted: int
    permitted_issued: int
    found_by_kind: dict[str, tuple[int, int]]  # kind -> (found, planted)

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.tasks if self.tasks else 1.0


def _covered_share(geoms: np.ndarray, cover: shapely.Geometry) -> np.ndarray:
    areas = shapely.area(geoms)
    inter = shapely.area(shapely.intersection(geoms, cover))
    return np.divide(inter, areas, out=np.zeros_like(areas), where=areas > 0)


def score_tasks(
    tasks: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, *, lies_on: gpd.GeoDataFrame | None = None
) -> ObjectScore:
    """Object-level recall and precision of ``tasks`` against ``truth`` (fields kind, permitted).

    ``lies_on`` is the truth a task is correct on (default ``truth``): a wider one scores the
    tasks of part of an area without calling a task on a change just outside it wrong.
    """
    truth = truth.to_crs(tasks.crs) if tasks.crs is not None else truth
    lies_on = truth if lies_on is None else lies_on.to_crs(truth.crs)
    permitted = truth["permitted"].astype(bool).to_numpy()
    illegal = truth[~permitted]
    task_geoms = tasks.geometry.to_numpy()
    task_union = shapely.union_all(task_geoms)
    found = _covered_share(illegal.geometry.to_numpy(), task_union) >= _SHARE
    on = lies_on.geometry[~lies_on["permitted"].astype(bool)].to_numpy()
    correct = _covered_share(task_geoms, shapely.union_all(on)) >= _SHARE
    issued = _covered_share(truth[permitted].geometry.to_numpy(), task_union) >= _SHARE
    kinds = illegal["kind"].to_numpy()
    by_kind = {
        str(k): (int(found[kinds == k].sum()), int((kinds == k).sum())) for k in np.unique(kinds)
    }
    return ObjectScore(
        planted=len(illegal),
        found=int(found.sum()),
        tasks=len(tasks),
        correct=int(correct.sum()),
        permitted=int(permitted.sum()),
        permitted_issued=int(issued.sum()),
        found_by_kind=by_kind,
    )


#: The parts :func:`score_by_cover` scores apart.
COVERS = ("with DSM", "satellite only")


def score_by_cover(
    tasks: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, footprint: shapely.Geometry
) -> dict[str, ObjectScore]:
    """:func:`score_tasks` inside the drone footprint (drone imagery and a DSM in both epochs)
    and outside it (satellite only).

    A truth change is inside when its field ``in_drone`` is true, a task when its
    representative point lies in ``footprint`` (in the CRS of ``tasks``); a task is correct on
    a change on either side.
    """
    truth = truth.to_crs(tasks.crs) if tasks.crs is not None else truth
    inside = shapely.within(shapely.point_on_surface(tasks.geometry.to_numpy()), footprint)
    in_drone = truth["in_drone"].astype(bool).to_numpy()
    return {
        name: score_tasks(tasks[side], truth[part], lies_on=truth)
        for name, side, part in zip(COVERS, (inside, ~inside), (in_drone, ~in_drone), strict=True)
    }


def score_demo(quarter_dir: Path, truth_path: Path) -> ObjectScore:
    """Score a finished demo quarter (its GeoPackage's ``tasks``) against ``truth.gpkg``."""
    quarter = Path(quarter_dir).name
    tasks = gpd.read_file(Path(quarter_dir) / f"{quarter}.gpkg", layer="tasks")
    truth = gpd.read_file(truth_path, layer="truth")
    return score_tasks(tasks, truth)


def score_demo_by_cover(quarter_dir: Path, truth_path: Path) -> dict[str, ObjectScore]:
    """:func:`score_by_cover` of a finished demo quarter, the footprint from ``truth.gpkg``'s
    ``nuisance`` layer."""
    quarter = Path(quarter_dir).name
    tasks = gpd.read_file(Path(quarter_dir) / f"{quarter}.gpkg", layer="tasks")
    footprint = drone_footprint(truth_path, tasks.crs)
    return score_by_cover(tasks, gpd.read_file(truth_path, layer="truth"), footprint)


def drone_footprint(truth_path: Path, crs: Any) -> shapely.Geometry:
    """The drone block's outline in ``crs``, from ``truth.gpkg``'s ``nuisance`` layer."""
    nuisance = gpd.read_file(truth_path, layer="nuisance").to_crs(crs)
    return nuisance.geometry[nuisance["kind"] == "drone_footprint"].union_all()
