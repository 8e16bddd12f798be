"""Object scores of tasks against planted changes, overall and by cover."""

from __future__ import annotations

import geopandas as gpd
import shapely

from pipeline.scoring import COVERS, score_by_cover, score_tasks

CRS = "EPSG:4547"


def _truth() -> gpd.GeoDataFrame:
    # Inside the footprint x < 100: two illegal changes and a permitted one; outside: two
    # illegal changes, one of them (x 95..105) straddling the footprint's edge.
    return gpd.GeoDataFrame(
        {
            "kind": ["new_building", "extension", "new_building", "land_clearing", "demolition"],
            "permitted": [False, False, True, False, False],
            "in_drone": [True, True, True, False, False],
        },
        geometry=[
            shapely.box(10, 10, 20, 20),
            shapely.box(40, 10, 50, 20),
            shapely.box(70, 10, 80, 20),
            shapely.box(150, 10, 160, 20),
            shapely.box(95, 40, 105, 50),
        ],
        crs=CRS,
    )


def _tasks(*boxes) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=[shapely.box(*b) for b in boxes], crs=CRS)


def test_tasks_are_scored_object_by_object():
    tasks = _tasks((10, 10, 20, 20), (40, 10, 44, 20), (150, 10, 160, 20), (200, 0, 210, 10))
    score = score_tasks(tasks, _truth())
    assert (score.planted, score.found) == (4, 2)  # the 4-of-10 m cover of the extension is short
    assert (score.tasks, score.correct) == (4, 3)
    assert (score.permitted, score.permitted_issued) == (1, 0)
    assert score.found_by_kind == {
        "demolition": (0, 1),
        "extension": (0, 1),
        "land_clearing": (1, 1),
        "new_building": (1, 1),
    }


def test_covers_split_changes_by_the_footprint_and_tasks_by_where_they_lie():
    footprint = shapely.box(0, 0, 100, 100)
    # on the in-drone new building, on the permitted one, on the straddling demolition with
    # its point inside the footprint, and on the land clearing outside
    tasks = _tasks((10, 10, 20, 20), (70, 10, 80, 20), (94, 40, 101, 50), (150, 10, 160, 20))
    inside, outside = (score_by_cover(tasks, _truth(), footprint)[c] for c in COVERS)
    assert (inside.planted, inside.found, inside.tasks, inside.correct) == (2, 1, 3, 2)
    assert (inside.permitted, inside.permitted_issued) == (1, 1)
    assert (outside.planted, outside.found, outside.tasks, outside.correct) == (2, 1, 1, 1)
    assert inside.recall == 0.5 and outside.precision == 1.0
