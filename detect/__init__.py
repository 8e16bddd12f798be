"""The vectorised change-detection core: arrays and an Affine in, change objects out.

``detect`` never opens a file and imports neither ``tiles`` nor ``pipeline``. The entry points
are :func:`detect_changes` (one haloed tile of two epochs -> :class:`TileResult`),
:func:`change_mask` (a plain image pair -> boolean mask) and :func:`cue_maps` (the per-pixel
cues behind both).
"""

from .align import Shift, apply_shift, estimate_shift, measure_shift
from .core import TileResult, change_mask, cue_maps, detect_changes
from .cues import Cues
from .objects import CHANGE_TYPES, ChangeType
from .params import DetectParams
from .radiometry import fit_gain_offset
from .scene import Scene

__all__ = [
    "CHANGE_TYPES",
    "ChangeType",
    "Cues",
    "DetectParams",
    "Scene",
    "Shift",
    "TileResult",
    "apply_shift",
    "change_mask",
    "cue_maps",
    "detect_changes",
    "estimate_shift",
    "fit_gain_offset",
    "measure_shift",
]
