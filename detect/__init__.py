"""The vectorised change-detection core: arrays and an Affine in, change objects out.

``detect`` never opens a file and imports neither ``tiles`` nor ``pipeline``. The entry points
are :func:`detect_changes` (one haloed tile of two epochs -> :class:`TileResult`) and
:func:`change_mask` (a plain image pair -> boolean mask).
"""

from .align import Shift, apply_shift, estimate_shift
from .core import TileResult, change_mask, detect_changes
from .cues import Cues, compute_cues
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
    "compute_cues",
    "detect_changes",
    "estimate_shift",
    "fit_gain_offset",
]
