"""Turn a quarter's suspects into tasks for street offices.

The rules, applied in this order (all thresholds in :class:`TaskRules`):

1. **Earlier tasks.** ``earlier`` holds the tasks of earlier quarters (from the register). A
   suspect is *linked* to an earlier task when their shared area is at least ``link_overlap`` of
   the smaller of the two; among several, the one sharing most area (then the lowest
   ``task_id``) is taken.
2. **Suppression.** A suspect is not issued, and goes to ``TaskSet.suppressed`` with a
   ``reason`` (and ``prior_task_id`` where the reason is an earlier task), when, in order of
   precedence:

   * ``permit:<permit_id>``: at least ``permit_overlap`` of its area lies inside approved
     permits (the union of all of them); ``permit_id`` is the permit covering most of it;
   * ``cloud``: at least ``cloud_overlap`` of its area lies where cloud, haze or a cloud
     shadow kept some tile from comparing the epochs (``clouds``, joined over all tiles: a
     tile whose halo held too little of a cloud to recognise it still learns of it from its
     neighbour);
   * ``water``: at least ``water_share`` of the ground around it is open water in both
     epochs (``water_share`` column, from NDWI): boats, floating things, water levels;
   * ``below_min_area``: ``area_m2 < min_area_m2``;
   * ``demolition_observed:<task_id>``: it is a ``demolition`` linked to an earlier task
     verified illegal: evidence for closing that task, not a new task;
   * ``persisting:<task_id>``: it is linked to an earlier task still open (no ``closed_at``):
     the case is still present and is not issued twice.

   :data:`pipeline.vocab.REASONS` holds the reasons (the part before ``:``) and their Chinese
   labels.
3. **Office.** Every other suspect goes to the one office it overlaps most (on a tie, the office
   listed first); a suspect sharing no area with any office goes to ``TaskSet.unassigned``.
   A task linked to an earlier, closed task keeps its ID as ``prior_task_id``.
4. **Priority.** ``urgency = score × TYPE_WEIGHTS[change_type] × size`` with
   ``size = clip(log10(area_m2) / log10(key_case_area_m2), 0, 1)``, so a 100 m² change weighs
   2/3 of a 1000 m² one. A task is a **key case** (重点督办) if ``area_m2 ≥ key_case_area_m2``;
   or ``score ≥ key_case_score`` and it is a ``new_building``; or it is a **repeat**: linked to
   at least ``key_case_repeats`` earlier tasks verified illegal (the construction came back).
   ``priority`` is 1 (highest) for key cases and ``urgency ≥ high_urgency``, 2 for
   ``urgency ≥ medium_urgency``, else 3.
   For example a 200 m² new building at score 0.85 has urgency 0.65 (priority 1), a 100 m²
   extension at 0.7 has 0.42 (priority 2), a 50 m² demolition at 0.5 has 0.14 (priority 3).
5. **IDs.** ``task_id = <quarter>-<office_code>-<NNNN>``, numbered from 0001 within each office
   in the order: priority, urgency (highest first), centroid ``y`` (north first), centroid ``x``
   (west first), ``suspect_id``. The same inputs always give the same IDs.
6. **Deadline.** ``due_at = issued_at + deadline_days``; ``status`` starts as ``issued``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from errors import ConfigError, InputError

from .vocab import CHANGE_TYPES, TASK_HEADERS

__all__ = [
    "EARLIER_FIELDS",
    "SUSPECT_FIELDS",
    "TASK_FIELDS",
    "TYPE_WEIGHTS",
    "TaskRules",
    "TaskSet",
    "build_tasks",
]

SUSPECT_FIELDS: tuple[str, ...] = (
    "suspect_id",
    "tile",
    "change_type",
    "area_m2",
    "height_gain_m",
    "score",
)
"""Columns a suspects frame must have (besides its geometry)."""

TASK_FIELDS: tuple[str, ...] = (*TASK_HEADERS, "status", "suspect_id")
"""Columns of ``TaskSet.tasks`` (besides its geometry), in order."""

EARLIER_FIELDS: tuple[str, ...] = ("task_id", "result", "closed_at")
"""Columns an ``earlier`` tasks frame must have (besides its geometry)."""

TYPE_WEIGHTS: dict[str, float] = {
    "new_building": 1.0,
    "extension": 0.9,
    "land_clearing": 0.7,
    "other": 0.6,
    "demolition": 0.5,
}
"""How much each change type weighs in a task's urgency."""

_QUARTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class TaskRules:
    """Thresholds that decide which suspects become tasks and how urgent they are.

    Attributes
    ----------
    min_area_m2 : float
        Suspects smaller than this (m²) are suppressed as ``below_min_area``.
    permit_overlap : float
        Share (0-1] of a suspect's area inside permits from which it is suppressed.
    key_case_area_m2 : float
        Area (m², > 1) from which a task is a key case; also the area of full ``size``.
    key_case_score : float
        Score (0-1) from which a new building is a key case whatever its area.
    key_case_repeats : int
        Number (>= 1) of linked earlier tasks verified illegal that make a task a key case.
    high_urgency, medium_urgency : float
        Urgency from which a task has priority 1, and 2.
    link_overlap : float
        Share (0-1] of the smaller polygon's area from which a suspect and an earlier task
        are linked (the same place).
    cloud_overlap : float
        Share (0-1] of a suspect's area in ``clouds`` from which it is suppressed as ``cloud``.
    water_share : float
        Share (0-1] of the ring around a suspect on open water in both epochs from which it
        is suppressed as ``water``.
    deadline_days : int
        Days (>= 1) from issue to ``due_at``, the date by which a task should be closed.
    """

    min_area_m2: float = 20.0
    permit_overlap: float = 0.5
    key_case_area_m2: float = 1000.0
    key_case_score: float = 0.9
    key_case_repeats: int = 1
    high_urgency: float = 0.6
    medium_urgency: float = 0.3
    link_overlap: float = 0.25
    cloud_overlap: float = 0.5
    water_share: float = 0.5
    deadline_days: int = 60

    def __post_init__(self) -> None:
        checks = {
            "min_area_m2": self.min_area_m2 >= 0,
            "permit_overlap": 0 < self.permit_overlap <= 1,
            "key_case_area_m2": self.key_case_area_m2 > 1,
            "key_case_score": 0 <= self.key_case_score <= 1,
            "key_case_repeats": self.key_case_repeats >= 1,
            "high_urgency": 0 <= self.medium_urgency <= self.high_urgency <= 1,
            "link_overlap": 0 < self.link_overlap <= 1,
            "cloud_overlap": 0 < self.cloud_overlap <= 1,
            "water_share": 0 < self.water_share <= 1,
            "deadline_days": self.deadline_days >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"task rule {name} = {getattr(self, name)!r} is out of range; allowed: "
                    "min_area_m2 >= 0, 0 < permit_overlap <= 1, key_case_area_m2 > 1, "
                    "0 <= key_case_score <= 1, key_case_repeats >= 1, "
                    "0 <= medium_urgency <= high_urgency <= 1, 0 < link_overlap <= 1, "
                    "0 < cloud_overlap <= 1, 0 < water_share <= 1, deadline_days >= 1"
                )


@dataclass(frozen=True, eq=False)
class TaskSet:
    """A quarter's suspects, split three ways (all GeoDataFrames in the grid CRS).

    Attributes
    ----------
    tasks : geopandas.GeoDataFrame
        Issued suspects, columns :data:`TASK_FIELDS`, sorted by office and task number.
    suppressed : geopandas.GeoDataFrame
        Suspects not issued: the suspect columns, ``reason``, ``prior_task_id`` (the earlier
        task of a ``persisting`` or ``demolition_observed`` reason, else missing) and
        ``office_code`` (the office it lies in most, missing outside every office).
    unassigned : geopandas.GeoDataFrame
        Suspects to issue that lie outside every office: the suspect columns.
    """

    tasks: gpd.GeoDataFrame
    suppressed: gpd.GeoDataFrame
    unassigned: gpd.GeoDataFrame


def build_tasks(
    suspects: gpd.GeoDataFrame,
    offices: gpd.GeoDataFrame,
    *,
    quarter: str,
    permits: gpd.GeoDataFrame | None = None,
    rules: TaskRules = TaskRules(),
    earlier: gpd.GeoDataFrame | None = None,
    clouds: gpd.GeoDataFrame | None = None,
    issued_at: datetime,
) -> TaskSet:
    """Split ``suspects`` into tasks per office, suppressed and unassigned (see module docs).

    Parameters
    ----------
    suspects : geopandas.GeoDataFrame
        Columns :data:`SUSPECT_FIELDS` (``suspect_id`` unique, ``change_type`` one of
        :data:`pipeline.vocab.CHANGE_TYPES`, ``area_m2`` in m², ``height_gain_m`` in m or NaN,
        ``score`` in 0-1) and (Multi)Polygon geometries in a projected CRS in metres.
    offices : geopandas.GeoDataFrame
        ``office_code``, ``office_name`` and polygons, as from :func:`pipeline.vectors.read_offices`.
    quarter : str
        The quarter's ID (the after epoch's), first part of every ``task_id``.
    permits : geopandas.GeoDataFrame, optional
        ``permit_id`` and polygons, as from :func:`pipeline.vectors.read_permits`.
    rules : TaskRules
        Suppression, key-case, priority, linking and deadline thresholds.
    earlier : geopandas.GeoDataFrame, optional
        Tasks issued in earlier quarters (from the register): columns :data:`EARLIER_FIELDS`
        (``result`` a code of :data:`pipeline.vocab.RESULTS` or missing, ``closed_at``
        missing while the task is open) and polygons in any CRS.
    clouds : geopandas.GeoDataFrame, optional
        Where cloud, haze or cloud shadow kept the epochs from being compared (polygons in
        any CRS), as :attr:`pipeline.changes.ChangeSet.clouds`.
    issued_at : datetime.datetime
        Time zone aware issue time, stored in UTC (millisecond precision).

    Returns
    -------
    TaskSet
        Every suspect lands in exactly one of ``tasks``, ``suppressed``, ``unassigned``.
    """
    suspects = _checked_suspects(suspects)
    if not _QUARTER.fullmatch(quarter):
        raise InputError(
            f"quarter {quarter!r} is not a safe name for IDs and folders; use an epoch id of "
            "1-32 ASCII letters, digits, _ . - in [run] after"
        )
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be time zone aware, e.g. datetime.now(UTC)")
    crs = suspects.crs
    geoms = suspects.geometry.to_numpy()
    i, j, pieces = _overlaps(geoms, offices.to_crs(crs).geometry.to_numpy())
    office = _largest(i, j, shapely.area(pieces), len(geoms))
    links = _links(suspects, _checked_earlier(earlier), rules=rules)
    reason, prior = _suppression(suspects, permits, clouds, links, rules=rules)
    suppressed = reason.notna().to_numpy()
    assigned = ~suppressed & (office >= 0)
    outside = ~suppressed & (office < 0)

    # one extra None so that office -1 (outside every office) indexes to None
    codes = np.append(offices["office_code"].to_numpy(dtype=object), None)
    names = np.append(offices["office_name"].to_numpy(dtype=object), None)
    held = suspects[suppressed].assign(
        reason=reason[suppressed],
        prior_task_id=prior[suppressed],
        office_code=pd.Series(codes[office], dtype="str")[suppressed],
    )
    tasks = _tasks(
        suspects[assigned],
        codes[office[assigned]],
        names[office[assigned]],
        links.closed[assigned],
        links.repeats[assigned],
        quarter=quarter,
        rules=rules,
        issued_at=pd.Timestamp(issued_at).tz_convert("UTC"),
    )
    return TaskSet(
        tasks=tasks,
        suppressed=held.reset_index(drop=True),
        unassigned=suspects[outside].reset_index(drop=True),
    )


def _checked_suspects(suspects: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    missing = [c for c in SUSPECT_FIELDS if c not in suspects.columns]
    if missing:
        raise InputError(
            f"suspects lack column(s) {', '.join(missing)} (have: {', '.join(suspects.columns)}); "
            "re-run `tuban changes`"
        )
    if suspects.crs is None or not suspects.crs.is_projected:
        raise InputError(f"suspects must be in a projected CRS in metres, not {suspects.crs}")
    dup = suspects["suspect_id"].duplicated()
    if dup.any():
        raise InputError(
            f"suspect_id {suspects['suspect_id'][dup].iloc[0]!r} is used twice; re-run `tuban changes`"
        )
    unknown = ~suspects["change_type"].isin(list(CHANGE_TYPES))
    if unknown.any():
        raise InputError(
            f"suspect {suspects['suspect_id'][unknown].iloc[0]!r} has change_type "
            f"{suspects['change_type'][unknown].iloc[0]!r}; allowed: {', '.join(CHANGE_TYPES)}"
        )
    empty = suspects.geometry.isna() | suspects.geometry.is_empty
    if empty.any():
        raise InputError(f"suspect {suspects['suspect_id'][empty].iloc[0]!r} has no geometry")
    return suspects.reset_index(drop=True)


def _overlaps(geoms: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` where ``geoms[i]`` and ``others[j]`` share area, and the shared pieces."""
    i, j = shapely.STRtree(others).query(geoms, predicate="intersects")
    pieces = shapely.intersection(geoms[i], others[j])
    shared = shapely.area(pieces) > 0
    return i[shared], j[shared], pieces[shared]


def _largest(i: np.ndarray, j: np.ndarray, area: np.ndarray, n: int) -> np.ndarray:
    """For each ``i`` in ``range(n)`` the ``j`` of its pair with the largest area, or -1.

    Ties go to the lowest ``j``. Returns an int64 array of length ``n``.
    """
    order = np.lexsort((j, -area, i))
    i, j = i[order], j[order]
    first = np.r_[True, i[1:] != i[:-1]] if len(i) else np.zeros(0, dtype=bool)
    best = np.full(n, -1, dtype=np.int64)
    best[i[first]] = j[first]
    return best


@dataclass(frozen=True)
class _Links:
    """Per suspect: the linked earlier task that is open, closed, verified illegal (``task_id``
    or None, object arrays) and how many linked earlier tasks were verified illegal (int64)."""

    open: np.ndarray
    closed: np.ndarray
    illegal: np.ndarray
    repeats: np.ndarray


def _checked_earlier(earlier: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
    if earlier is None or earlier.empty:
        return None
    missing = [c for c in EARLIER_FIELDS if c not in earlier.columns]
    if missing:
        raise InputError(
            f"earlier tasks lack column(s) {', '.join(missing)} (have: "
            f"{', '.join(earlier.columns)}); is the register a tuban register?"
        )
    return earlier.sort_values("task_id", ignore_index=True)


def _links(
    suspects: gpd.GeoDataFrame, earlier: gpd.GeoDataFrame | None, *, rules: TaskRules
) -> _Links:
    """Link each suspect to the earlier tasks at its place (see module docs, rule 1)."""
    n = len(suspects)
    none = np.full(n, None, dtype=object)
    if earlier is None:
        return _Links(none, none, none, np.zeros(n, dtype=np.int64))
    geoms = suspects.geometry.to_numpy()
    others = earlier.to_crs(suspects.crs).geometry.to_numpy()
    i, j, pieces = _overlaps(geoms, others)
    shared = shapely.area(pieces)
    same_place = shared >= rules.link_overlap * np.minimum(
        shapely.area(geoms[i]), shapely.area(others[j])
    )
    i, j, shared = i[same_place], j[same_place], shared[same_place]
    ids = np.append(earlier["task_id"].to_numpy(dtype=object), None)
    closed = earlier["closed_at"].notna().to_numpy()
    illegal = (earlier["result"] == "illegal").to_numpy()

    def best(among: np.ndarray) -> np.ndarray:
        keep = among[j]
        return ids[_largest(i[keep], j[keep], shared[keep], n)]

    return _Links(
        open=best(~closed),
        closed=best(closed),
        illegal=best(illegal),
        repeats=np.bincount(i[illegal[j]], minlength=n).astype(np.int64),
    )


def _suppression(
    suspects: gpd.GeoDataFrame,
    permits: gpd.GeoDataFrame | None,
    clouds: gpd.GeoDataFrame | None,
    links: _Links,
    *,
    rules: TaskRules,
) -> tuple[pd.Series, pd.Series]:
    """Each suspect's reason not to be issued and the earlier task it names (str), both
    missing for suspects to issue. Later rules override earlier ones (module docs, rule 2)."""
    reason = pd.Series(None, index=suspects.index, dtype="str")
    prior = pd.Series(None, index=suspects.index, dtype="str")
    for kind, task_ids, applies in (
        ("persisting", links.open, True),
        ("demolition_observed", links.illegal, suspects["change_type"] == "demolition"),
    ):
        linked = pd.notna(task_ids) & np.asarray(applies)
        reason[linked] = np.char.add(f"{kind}:", task_ids[linked].astype(str))
        prior[linked] = task_ids[linked]
    small = suspects["area_m2"].to_numpy() < rules.min_area_m2
    water = suspects.get("water_share", pd.Series(0.0, index=suspects.index))
    clouded = _covered_share(suspects, clouds)[0] >= rules.cloud_overlap
    for name, where in (
        ("below_min_area", small),
        ("water", water.fillna(0.0).to_numpy() >= rules.water_share),
        ("cloud", clouded),
    ):
        reason[where] = name
        prior[where] = None
    if permits is None or permits.empty:
        return reason, prior
    share, (i, j, pieces) = _covered_share(suspects, permits)
    permitted = share >= rules.permit_overlap
    best = _largest(i, j, shapely.area(pieces), len(suspects))[permitted]
    reason[permitted] = "permit:" + permits["permit_id"].to_numpy(dtype=object)[best]
    prior[permitted] = None
    return reason, prior


def _covered_share(
    suspects: gpd.GeoDataFrame, cover: gpd.GeoDataFrame | None
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Share of each suspect's area inside the union of ``cover``'s polygons, and the
    suspect-polygon overlaps (see :func:`_overlaps`)."""
    geoms = suspects.geometry.to_numpy()
    if cover is None or cover.empty:
        return np.zeros(len(geoms)), (np.array([], int), np.array([], int), np.array([]))
    i, j, pieces = _overlaps(geoms, cover.to_crs(suspects.crs).geometry.to_numpy())
    covered = np.zeros(len(geoms))
    if len(i):
        union = gpd.GeoDataFrame({"i": i}, geometry=pieces).dissolve("i")
        covered[union.index.to_numpy()] = union.area.to_numpy()
    area = shapely.area(geoms)
    return np.divide(covered, area, out=np.zeros_like(area), where=area > 0), (i, j, pieces)


def _priority(
    change_type: np.ndarray,
    area: np.ndarray,
    score: np.ndarray,
    repeats: np.ndarray,
    *,
    rules: TaskRules,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(priority int64 1-3, key_case bool, urgency float64 0-1)`` per task, as in module docs."""
    weight = pd.Series(change_type).map(TYPE_WEIGHTS).to_numpy(dtype=float)
    size = np.clip(np.log10(np.maximum(area, 1.0)) / np.log10(rules.key_case_area_m2), 0, 1)
    score = np.nan_to_num(score)
    urgency = score * weight * size
    key_case = (
        (area >= rules.key_case_area_m2)
        | ((score >= rules.key_case_score) & (change_type == "new_building"))
        | (repeats >= rules.key_case_repeats)
    )
    priority = np.where(
        key_case | (urgency >= rules.high_urgency),
        1,
        np.where(urgency >= rules.medium_urgency, 2, 3),
    )
    return priority.astype(np.int64), key_case, urgency


@lru_cache(maxsize=8)
def _to_cgcs2000(crs_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_epsg(4490), always_xy=True)


def _tasks(
    suspects: gpd.GeoDataFrame,
    office_codes: np.ndarray,
    office_names: np.ndarray,
    prior_task_ids: np.ndarray,
    repeats: np.ndarray,
    *,
    quarter: str,
    rules: TaskRules,
    issued_at: pd.Timestamp,
) -> gpd.GeoDataFrame:
    """Assemble the tasks frame: office, priority, centroid, lon/lat, IDs and empty fill-ins."""
    change_type = suspects["change_type"].to_numpy(dtype=object)
    area = suspects["area_m2"].to_numpy(dtype=float)
    priority, key_case, urgency = _priority(
        change_type, area, suspects["score"].to_numpy(dtype=float), repeats, rules=rules
    )
    centroids = shapely.centroid(suspects.geometry.to_numpy())
    x, y = shapely.get_x(centroids), shapely.get_y(centroids)
    lon, lat = _to_cgcs2000(suspects.crs.to_wkt()).transform(x, y)
    frame = pd.DataFrame(
        {
            "suspect_id": pd.array(suspects["suspect_id"], dtype="str"),
            "office_code": pd.array(office_codes, dtype="str"),
            "office_name": pd.array(office_names, dtype="str"),
            "change_type": pd.array(change_type, dtype="str"),
            "area_m2": area,
            "height_gain_m": suspects["height_gain_m"].to_numpy(dtype=float),
            "score": suspects["score"].to_numpy(dtype=float),
            "priority": priority,
            "key_case": key_case,
            "prior_task_id": pd.array(prior_task_ids, dtype="str"),
            "x": np.round(x, 2),
            "y": np.round(y, 2),
            "lon": np.round(lon, 7),
            "lat": np.round(lat, 7),
            "_urgency": urgency,
            "_geometry": suspects.geometry.to_numpy(),
        }
    ).sort_values(
        ["office_code", "priority", "_urgency", "y", "x", "suspect_id"],
        ascending=[True, True, False, False, True, True],
        kind="stable",
        ignore_index=True,
    )
    number = (frame.groupby("office_code").cumcount() + 1).astype(str).str.zfill(4)
    empty_text = pd.Series(None, index=frame.index, dtype="str")
    no_date = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ms, UTC]")
    issued = pd.Series(issued_at, index=frame.index, dtype="datetime64[ms, UTC]")
    frame = frame.assign(
        task_id=quarter + "-" + frame["office_code"] + "-" + number,
        quarter=quarter,
        issued_at=issued,
        due_at=issued + timedelta(days=rules.deadline_days),
        status="issued",
        result=empty_text,
        disposal=empty_text,
        verified_at=no_date,
        closed_at=no_date,
        inspector=empty_text,
        note=empty_text,
    )
    return gpd.GeoDataFrame(
        frame[list(TASK_FIELDS)], geometry=frame["_geometry"].to_numpy(), crs=suspects.crs
    )
