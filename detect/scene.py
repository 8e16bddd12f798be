"""What one epoch looks like on one tile, and the checks that two epochs can be compared.

A :class:`Scene` holds the arrays that ingest read onto one (haloed) tile of the analysis grid:
any of a multispectral satellite image, a drone orthomosaic (RGB) and a DSM. :func:`layers`
turns a scene into uniform :class:`Layer` records (float32 data with NaN/inf and invalid pixels
replaced, plus a boolean valid mask), which is what the rest of ``detect`` works on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import numpy as np

from errors import InputError

from .sampling import sampled

__all__ = [
    "DRONE_BANDS",
    "MAX_MAGNITUDE",
    "Layer",
    "LayerKind",
    "Scene",
    "check_pair",
    "compared_box",
    "crop",
    "layers",
]

LayerKind = Literal["satellite", "drone", "dsm"]

#: Largest magnitude of a measurement (DN, 0..255, metres); beyond it a value is nodata.
MAX_MAGNITUDE = 1e6
#: Band order of :attr:`Scene.drone`.
DRONE_BANDS: tuple[str, ...] = ("red", "green", "blue")


@dataclass(frozen=True)
class Scene:
    """One epoch on one (haloed) tile; every array is (h, w) or (n, h, w), all on the same grid.

    Attributes
    ----------
    satellite : ndarray, shape (n, h, w), optional
        Raw digital numbers (e.g. uint16 DN, or float32), ``n >= 1`` bands. Integer arrays of
        8 or 16 bits are taken as they are: they need no check for NaN or huge values.
    satellite_bands : tuple of str
        One name per satellite band, e.g. ``("blue", "green", "red", "nir")``. The names
        ``red``, ``green``, ``blue`` and ``nir`` enable the colour and vegetation cues.
    satellite_valid : ndarray of bool, shape (h, w), optional
        True where the satellite image has data; None means every finite pixel.
        Whatever the masks say, a pixel with a non-finite value or one beyond
        ``MAX_MAGNITUDE`` in any band is nodata.
    drone : ndarray, shape (3, h, w), optional
        Drone orthomosaic resampled to the grid, RGB in 0..255 (uint8 or float).
    drone_valid : ndarray of bool, shape (h, w), optional
        True where the orthomosaic has data; None means every finite pixel.
    dsm : ndarray of float32, shape (h, w), optional
        Digital surface model, metres.
    dsm_valid : ndarray of bool, shape (h, w), optional
        True where the DSM has data; None means every finite pixel.
    """

    satellite: np.ndarray | None = None
    satellite_bands: tuple[str, ...] = ()
    satellite_valid: np.ndarray | None = None
    drone: np.ndarray | None = None
    drone_valid: np.ndarray | None = None
    dsm: np.ndarray | None = None
    dsm_valid: np.ndarray | None = None


class Layer(NamedTuple):
    """One source of one epoch, ready for comparison.

    ``data`` is float32 (n, h, w) with every invalid pixel set to the band's median of valid
    pixels (0 when none), so filters never see NaN; ``valid`` is (h, w) bool.
    """

    kind: LayerKind
    bands: tuple[str, ...]
    data: np.ndarray
    valid: np.ndarray


def check_pair(before: Scene, after: Scene) -> tuple[int, int]:
    """Check that two scenes are well formed and on the same grid.

    Returns
    -------
    tuple of int
        The tile shape ``(h, w)`` in pixels; ``(0, 0)`` when neither scene holds an array.

    Raises
    ------
    errors.InputError
        A layer with the wrong number of dimensions or bands, a valid mask of another shape, or
        epochs of different shapes.
    """
    shapes = {}
    for epoch, scene in (("before", before), ("after", after)):
        shape = _scene_shape(epoch, scene)
        if shape is not None:
            shapes[epoch] = shape
    if len(set(shapes.values())) > 1:
        raise InputError(
            f"after is {shapes['after']} but before is {shapes['before']} pixels; "
            "read both epochs onto the same tile of the grid"
        )
    return next(iter(shapes.values()), (0, 0))


def compared_box(
    before: Scene, after: Scene, *, margin: int = 0, align: int = 1
) -> tuple[slice, slice] | None:
    """The rows and columns of the smallest box holding every pixel at which both (checked)
    epochs have data in some layer, grown by ``margin`` px on each side and its edges moved
    out to multiples of ``align`` (within the tile); None when the epochs share no pixel.

    Nothing outside the box can be compared, so the detection of a tile that the epochs
    cover only in part (the edge of a quarter, a drone flight's patch) need look at no more.
    """
    first, second = _covered(before), _covered(after)
    if not (first.size and second.size):
        return None
    both = first & second
    rows, cols = np.flatnonzero(both.any(axis=1)), np.flatnonzero(both.any(axis=0))
    if not rows.size:
        return None
    return tuple(
        slice(max(lo - margin, 0) // align * align, min(-(-(hi + 1 + margin) // align) * align, n))
        for lo, hi, n in (
            (int(rows[0]), int(rows[-1]), both.shape[0]),
            (int(cols[0]), int(cols[-1]), both.shape[1]),
        )
    )


def crop(scene: Scene, box: tuple[slice, slice]) -> Scene:
    """``scene`` cut to ``box`` (rows, cols); its arrays are views of the scene's."""

    def cut(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else np.asarray(array)[..., box[0], box[1]]

    return replace(
        scene,
        satellite=cut(scene.satellite),
        satellite_valid=cut(scene.satellite_valid),
        drone=cut(scene.drone),
        drone_valid=cut(scene.drone_valid),
        dsm=cut(scene.dsm),
        dsm_valid=cut(scene.dsm_valid),
    )


def _covered(scene: Scene) -> np.ndarray:
    """Where some layer of a (checked) scene has data by its masks; (h, w) bool."""
    masks = []
    for data, valid in (
        (scene.satellite, scene.satellite_valid),
        (scene.drone, scene.drone_valid),
        (scene.dsm, scene.dsm_valid),
    ):
        if data is not None:
            shape = np.shape(data)[-2:]
            if valid is None:
                return np.ones(shape, bool)
            masks.append(np.asarray(valid, dtype=bool))
    return np.logical_or.reduce(masks) if masks else np.zeros((0, 0), bool)


def layers(scene: Scene) -> dict[LayerKind, Layer]:
    """The layers a (checked) scene holds, keyed by kind.

    Parameters
    ----------
    scene : Scene
        A scene that passed :func:`check_pair`.

    Returns
    -------
    dict
        ``"satellite"``, ``"drone"`` and/or ``"dsm"`` to :class:`Layer`; a DSM is one band
        named ``"height"``.
    """
    out: dict[LayerKind, Layer] = {}
    if scene.satellite is not None:
        out["satellite"] = _layer(
            "satellite", scene.satellite_bands, scene.satellite, scene.satellite_valid
        )
    if scene.drone is not None:
        out["drone"] = _layer("drone", DRONE_BANDS, scene.drone, scene.drone_valid)
    if scene.dsm is not None:
        out["dsm"] = _layer("dsm", ("height",), scene.dsm[np.newaxis], scene.dsm_valid)
    return out


def _layer(
    kind: LayerKind, bands: tuple[str, ...], data: np.ndarray, valid: np.ndarray | None
) -> Layer:
    data = np.asarray(data)
    bounded = _within(data.dtype)
    data = data.astype(np.float32, copy=False)
    if bounded or (
        -MAX_MAGNITUDE <= data.min() and data.max() <= MAX_MAGNITUDE  # False with any NaN
    ):
        ok = np.ones(data.shape[1:], bool) if valid is None else np.array(valid, dtype=bool)
    else:
        ok = (np.abs(data) <= MAX_MAGNITUDE).all(axis=0)  # also False for NaN
        if valid is not None:
            ok &= np.asarray(valid, dtype=bool)
    if ok.all():
        return Layer(kind, tuple(bands), data, ok)
    filled = np.empty_like(data)
    for i, (band, picked) in enumerate(zip(data, sampled(data, ok), strict=True)):
        filled[i] = np.where(ok, band, np.median(picked) if picked.size else 0.0)
    return Layer(kind, tuple(bands), filled, ok)


def _within(dtype: np.dtype) -> bool:
    """Whether every value of ``dtype`` is a finite number within ``MAX_MAGNITUDE`` (8- and
    16-bit integers: no pass over the data is needed to know it)."""
    if dtype.kind == "b":
        return True
    if dtype.kind not in "iu":
        return False
    return -MAX_MAGNITUDE <= np.iinfo(dtype).min and np.iinfo(dtype).max <= MAX_MAGNITUDE


def _scene_shape(epoch: str, scene: Scene) -> tuple[int, int] | None:
    """The (h, w) all arrays of ``scene`` share, or None for an empty scene."""
    shape = None
    checks = (
        ("satellite", scene.satellite, 3),
        ("satellite_valid", scene.satellite_valid, 2),
        ("drone", scene.drone, 3),
        ("drone_valid", scene.drone_valid, 2),
        ("dsm", scene.dsm, 2),
        ("dsm_valid", scene.dsm_valid, 2),
    )
    for name, array, ndim in checks:
        if array is None:
            continue
        array_shape = np.shape(array)
        if len(array_shape) != ndim:
            want = "(bands, rows, cols)" if ndim == 3 else "(rows, cols)"
            raise InputError(f"{epoch}.{name} has shape {array_shape}; give {want}")
        if 0 in array_shape:
            raise InputError(
                f"{epoch}.{name} has shape {array_shape}, no pixels; give at least one band "
                "of at least 1 x 1 px or leave it out"
            )
        if shape is None:
            shape = array_shape[-2:]
        elif array_shape[-2:] != shape:
            raise InputError(
                f"{epoch}.{name} covers {array_shape[-2:]} pixels but the scene's other arrays "
                f"cover {shape}; read every layer onto the same tile"
            )
    if scene.satellite is not None and len(scene.satellite_bands) != scene.satellite.shape[0]:
        raise InputError(
            f"{epoch}.satellite has {scene.satellite.shape[0]} band(s) but satellite_bands names "
            f"{len(scene.satellite_bands)} ({', '.join(scene.satellite_bands) or 'none'}); "
            "give one name per band"
        )
    if scene.drone is not None and scene.drone.shape[0] != len(DRONE_BANDS):
        raise InputError(
            f"{epoch}.drone has {scene.drone.shape[0]} band(s); give the orthomosaic's "
            "red, green and blue bands (drop alpha into drone_valid)"
        )
    for name, mask in (
        ("satellite_valid", scene.satellite_valid),
        ("drone_valid", scene.drone_valid),
        ("dsm_valid", scene.dsm_valid),
    ):
        source = getattr(scene, name.removesuffix("_valid"))
        if mask is not None and source is None:
            raise InputError(f"{epoch}.{name} is given without {epoch}.{name[:-6]}; drop the mask")
    return shape
