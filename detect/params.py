"""The tunables of change detection, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields

from errors import ConfigError

__all__ = ["DetectParams"]

#: Parameters that are shares, 0..1.
_SHARES = {"min_shift_confidence", "shadow_ratio", "score_low", "score_high", "outline_share"}


@dataclass(frozen=True)
class DetectParams:
    """Tunables of :func:`detect.detect_changes`, with defaults for 0.3-1 m imagery.

    Lengths are in metres (and areas in m²), so the same parameters hold at any grid resolution.
    A ``(low, high)`` pair maps a cue onto evidence: 0 at or below ``low``, 1 at or above
    ``high``, linear between.

    Attributes
    ----------
    min_area_m2 : float
        Smallest object reported (m²). A car is about 8 m², a small shed 10-20 m².
    smooth_m : float
        Gaussian sigma (m) applied to every layer of both epochs before they are compared;
        it absorbs the remaining sub-pixel misregistration and sensor noise.
    max_shift_m : float
        A measured misregistration longer than this (m) is taken for a failed match, not applied.
    min_shift_confidence : float
        Apply a measured shift only at or above this confidence (0..1, see
        :class:`detect.align.Shift`).
    spectral_z : tuple of float
        Colour change in robust standard deviations of the tile's differences -> evidence.
    structure_change : float
        Change of local edge density (normalised difference, 0..1) beyond which colour
        evidence is raised, up to twice at twice this change: a grey roof on grey ground
        differs more in its edges than in its colour.
    height_change_m : tuple of float
        Height gain or loss (m) between two DSMs -> evidence; one storey is about 3 m.
    vegetation_ndvi : float
        NDVI at or above which a pixel is vegetation (with red and near-infrared bands).
    vegetation_greenness : float
        Normalised excess green ``(2g - r - b) / (r + g + b)`` at or above which a pixel is
        vegetation (RGB only).
    shadow_ratio : float
        A pixel whose every band darkened to at most this share (on linear brightness) fell
        into shadow; the inverse brightening left one.
    cloud_min_area_m2 : float
        Smallest cloud core (m²); smaller bright patches are objects, and so are shadows
        smaller than five times it with no cloud in view (a bright patch is a cloud only when
        its edge fades; see :mod:`detect.nuisance`).
    score_low, score_high : float
        Hysteresis thresholds on the fused 0..1 score: objects grow over pixels above
        ``score_low`` from seeds above ``score_high``.
    outline_share : float
        An object keeps the pixels whose evidence reaches this share of its strongest pixel,
        so high-contrast changes are outlined at their size, not at their blurred fringe.
    open_m : float
        Radius (m) of the opening that removes whatever is narrower than about twice it:
        cars (even parked side by side), fences, poles, slivers along misregistered edges.
    close_m : float
        Radius (m) of the closing that joins the parts of one change.
    focus : bool
        Compute the cues only in the windows of a tile where a cheap screen finds pixels that
        could change (see :mod:`detect.focus`): the same objects, several times faster on
        quiet ground. False computes them on every pixel.
    """

    min_area_m2: float = 20.0
    smooth_m: float = 0.25
    max_shift_m: float = 4.0
    min_shift_confidence: float = 0.3
    spectral_z: tuple[float, float] = (3.0, 8.0)
    structure_change: float = 0.5
    height_change_m: tuple[float, float] = (1.0, 2.5)
    vegetation_ndvi: float = 0.3
    vegetation_greenness: float = 0.06
    shadow_ratio: float = 0.55
    cloud_min_area_m2: float = 500.0
    score_low: float = 0.3
    score_high: float = 0.6
    outline_share: float = 0.2
    open_m: float = 1.5
    close_m: float = 1.0
    focus: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if len(value) != 2 or not 0 <= value[0] < value[1]:
                    raise ConfigError(
                        f"[detect] {f.name} = {list(value)}; give [low, high] with 0 <= low < high"
                    )
            elif f.name.startswith("vegetation"):
                if not -1.0 <= value <= 1.0:
                    raise ConfigError(f"[detect] {f.name} = {value}; give a value in -1..1")
            elif f.name in _SHARES:
                if not 0.0 <= value <= 1.0:
                    raise ConfigError(f"[detect] {f.name} = {value}; give a value in 0..1")
            elif not value >= 0:
                raise ConfigError(f"[detect] {f.name} = {value}; give a value >= 0")
        if not self.score_low <= self.score_high <= 1.0:
            raise ConfigError(
                f"[detect] score_low = {self.score_low}, score_high = {self.score_high}; "
                "give 0 <= score_low <= score_high <= 1"
            )
