"""The words tuban shows to street offices and accepts back from them, in one place.

Tables store ASCII codes (``new_building``, ``illegal``, ``task_id``); worklists show them in
Chinese (``lang="zh"``, the default) or as the codes themselves (``lang="en"``). Whatever a
worklist showed is accepted back when it returns: :func:`accepted` maps every spelling of a term
(code or Chinese label) to its code, and :data:`HEADER_FIELDS` maps every column header to its
field.

A vocabulary is a ``dict`` from code to Chinese label; the English label is the code.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ALIASES",
    "CHANGE_TYPES",
    "DATE_FIELDS",
    "DISPOSALS",
    "EVENTS",
    "FILL_IN_FIELDS",
    "HEADER_FIELDS",
    "LANGS",
    "Lang",
    "REASONS",
    "RESULTS",
    "STATS_HEADERS",
    "STATUSES",
    "TASK_HEADERS",
    "WORDS",
    "YES_NO",
    "accepted",
    "header",
    "label",
]

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")

CHANGE_TYPES: dict[str, str] = {
    "new_building": "新增建筑",
    "extension": "扩建",
    "demolition": "拆除",
    "land_clearing": "土地平整",
    "other": "其他",
}
"""What changed, as detected (``change_type``)."""

RESULTS: dict[str, str] = {
    "illegal": "违法建设",
    "legal": "合法建设",
    "false_positive": "误报",
    "existing": "存量已登记",
}
"""What the office found on site (``result``, 核查结果)."""

DISPOSALS: dict[str, str] = {
    "demolished": "已拆除",
    "rectified": "已整改",
    "fined": "已处罚",
    "legalized": "已补办手续",
    "none": "未处置",
}
"""What was done about it (``disposal``, 处置结果)."""

YES_NO: dict[str, str] = {"yes": "是", "no": "否"}
"""How booleans (``key_case``) are shown."""

REASONS: dict[str, str] = {
    "permit": "已有审批",
    "below_min_area": "面积过小",
    "water": "位于水域",
    "cloud": "云或云影遮挡",
    "persisting": "前期任务未办结",
    "demolition_observed": "违法建设已拆除",
}
"""Why a suspect was not issued (the part of ``reason`` before any ``:``)."""

STATUSES: dict[str, str] = {
    "issued": "待核查",
    "verified": "已核查",
    "closed": "已办结",
}
"""Where a task stands (``status``): no ``result`` yet, a ``result``, a ``closed_at`` date."""

EVENTS: dict[str, str] = {
    "issued": "下发",
    "still_present": "仍存在",
    "demolition_observed": "监测到拆除",
    "returned": "核查结果回填",
}
"""What the register's ``status_history`` records about a task (``event``)."""

TASK_HEADERS: dict[str, str] = {
    "task_id": "任务编号",
    "quarter": "季度",
    "office_code": "街道代码",
    "office_name": "街道名称",
    "change_type": "变化类型",
    "area_m2": "面积(㎡)",
    "height_gain_m": "增高(m)",
    "score": "置信度",
    "priority": "优先级",
    "key_case": "重点督办",
    "prior_task_id": "前期任务",
    "x": "X",
    "y": "Y",
    "lon": "经度",
    "lat": "纬度",
    "issued_at": "下发时间(UTC)",
    "due_at": "办结期限",
    "result": "核查结果",
    "disposal": "处置结果",
    "verified_at": "核查日期",
    "closed_at": "办结日期",
    "inspector": "核查人",
    "note": "备注",
}
"""Worklist columns, in order, with their Chinese headers (English header = field name)."""

FILL_IN_FIELDS: tuple[str, ...] = (
    "result",
    "disposal",
    "verified_at",
    "closed_at",
    "inspector",
    "note",
)
"""The columns street offices fill in."""

DATE_FIELDS: tuple[str, ...] = ("verified_at", "closed_at")
"""Fill-in columns that hold a date."""

ALIASES: dict[str, str] = {
    **TASK_HEADERS,
    "suspect_id": "图斑编号",
    "tile": "瓦片",
    "reason": "未下发原因",
    "status": "状态",
    "last_seen": "最近发现季度",
    "demolition_observed": "监测到拆除季度",
    "water_share": "水域占比",
}
"""Chinese aliases of every field tuban writes to its layers (QGIS shows them as column names)."""

STATS_HEADERS: dict[str, str] = {
    "office_code": "街道代码",
    "office_name": "街道名称",
    "issued": "下发",
    "verified": "已核查",
    "verify_rate": "核查率",
    "closed": "已办结",
    "close_rate": "办结率",
    "overdue": "逾期未办结",
    "open_key_cases": "重点督办未办结",
    "rank": "排名",
}
"""Columns of the per-office statistics, with their Chinese headers."""

WORDS: dict[str, str] = {
    "worklist": "核查任务清单",
    "tasks": "核查任务",
    "number of tasks": "任务数",
    "quarter": "季度",
    "before": "变化前",
    "after": "变化后",
    "before image": "变化前影像",
    "after image": "变化后影像",
    "drone": "无人机",
    "satellite": "卫星",
    "no image": "无影像",
    "location": "位置",
    "all offices": "全部街道",
    "all quarters": "全部季度",
    "rates": "核查率与办结率",
}
"""Other words on worklists and evidence packs (the English label is the key)."""

HEADER_FIELDS: dict[str, str] = {
    **{field: field for field in TASK_HEADERS},
    **{zh: field for field, zh in TASK_HEADERS.items()},
}
"""Every worklist header, Chinese or English, mapped to its field."""


def label(vocabulary: dict[str, str], code: str, *, lang: Lang) -> str:
    """The label of ``code`` shown in ``lang``: the Chinese label, or the code itself in English."""
    return vocabulary[code] if lang == "zh" else code


def header(field: str, *, lang: Lang) -> str:
    """The worklist header of ``field`` in ``lang``."""
    return TASK_HEADERS[field] if lang == "zh" else field


def accepted(vocabulary: dict[str, str]) -> dict[str, str]:
    """Every spelling accepted back (the code or the Chinese label) mapped to its code.

    Codes are lower case, so normalise cells first, e.g.
    ``cells.str.strip().str.lower().map(accepted(RESULTS))``; cells that map to NaN hold a
    word outside the vocabulary.
    """
    return {code: code for code in vocabulary} | {zh: code for code, zh in vocabulary.items()}
