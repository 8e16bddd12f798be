"""The whole loop on the two-quarter demo, as a city runs it.

Quarter 2024Q2 is issued; each street office fills its xlsx worklist (the simulated verdicts
follow the planted truth); the returned files are imported; the stats equal the simulated rates;
quarter 2024Q3 then links the cases seen again instead of issuing them twice.
"""

from __future__ import annotations

from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pytest
import shapely
from city import fill_worklist
from click.testing import CliRunner

from cli import main
from pipeline import batch
from pipeline.config import load_config
from pipeline.demo import make_demo, score_quarter
from pipeline.executors import Executor
from pipeline.register import read_register
from pipeline.stats import office_stats

pytestmark = pytest.mark.slow
TODAY = datetime.combine(datetime.now(UTC).date(), datetime.min.time())
VERIFIED = CLOSED = TODAY  # the batch issues its tasks now


def _on_truth(tasks: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> np.ndarray:
    """Whether each task lies for at least half its area on a planted illegal change."""
    illegal = shapely.union_all(truth.geometry[~truth["permitted"].astype(bool)].to_numpy())
    geoms = tasks.geometry.to_numpy()
    return shapely.area(shapely.intersection(geoms, illegal)) >= 0.5 * shapely.area(geoms)


def test_two_quarters_with_returned_worklists(tmp_path):
    demo = make_demo(tmp_path / "demo", size=1024, seed=0, quarters=2)
    first = load_config(demo.configs[0])
    batch.run(first, executor=Executor("serial", progress=False))
    q2 = batch.quarter_dir(first)
    tasks = gpd.read_file(q2 / "2024Q2.gpkg", layer="tasks")
    assert len(tasks) > 0
    truth = gpd.read_file(demo.truth, layer="truth").to_crs(tasks.crs)
    illegal = _on_truth(tasks, truth)

    # Offices verify every task: planted changes are illegal, the rest false positives. Office
    # XQ closes everything it verified; the others close only the false positives.
    answers, expected = {}, {}
    for code, group in tasks.groupby("office_code"):
        closed = 0
        for task_id, is_illegal in zip(group["task_id"], illegal[group.index], strict=True):
            cells = {
                "核查结果": "违法建设" if is_illegal else "误报",
                "核查日期": VERIFIED,
                "核查人": "张三",
            }
            if code == "XQ" or not is_illegal:
                cells.update({"处置结果": "已拆除" if is_illegal else "未处置", "办结日期": CLOSED})
                closed += 1
            answers[task_id] = cells
        expected[code] = (len(group), len(group), closed)
    returned = [
        fill_worklist(
            q2 / "worklists" / code / f"{code}_2024Q2.xlsx",
            tmp_path / f"{code}_2024Q2.xlsx",
            answers,
        )
        for code in sorted(expected)
    ]
    register = first.resolve(first.paths.register_path)
    done = CliRunner().invoke(
        main, ["import-results", *map(str, returned), "--register", str(register), "--by", "城管局"]
    )
    assert done.exit_code == 0, done.output

    table = office_stats(
        read_register(register), quarter="2024Q2", as_of=datetime.now(UTC)
    ).set_index("office_code")
    for code, (issued, verified, closed) in expected.items():
        row = table.loc[code]
        assert (row["issued"], row["verified"], row["closed"]) == (issued, verified, closed)
        assert row["verify_rate"] == pytest.approx(verified / issued)
        assert row["close_rate"] == pytest.approx(closed / issued)

    # The next quarter: continued construction and demolitions at earlier tasks' places are
    # linked to those tasks, not issued again.
    second = load_config(demo.configs[1])
    report = batch.run(second, executor=Executor("serial", progress=False))
    score = score_quarter(demo, 1, report.out_dir)
    assert score.followed > 0
    assert score.reissued == 0
    assert score.linked == score.followed
    # its new changes and tasks split between the drone block and the satellite-only area
    for count in ("planted", "tasks"):
        assert sum(getattr(c, count) for c in score.covers.values()) == getattr(
            score.objects, count
        )
    ids_2 = gpd.read_file(report.out_dir / "2024Q3.gpkg", layer="tasks")["task_id"]
    assert not set(ids_2) & set(tasks["task_id"])
    registered = read_register(register).tasks
    assert registered["task_id"].is_unique
    assert set(tasks["task_id"]) <= set(registered["task_id"])
