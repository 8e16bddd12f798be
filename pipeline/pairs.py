"""Plain image pairs and labelled pairs folders: reading them, and writing a change mask.

A **pair** is two images of the same place and size, before and after: PNG (or JPEG) read with
Pillow, or GeoTIFF read with rasterio. RGB, RGBA (alpha marks pixels without data), grey (used as
equal red, green and blue) and multi-band images (colour interpretation names the bands, else the
first three are red, green, blue) are accepted. A GeoTIFF in a projected CRS carries its own
pixel size; any other image takes the one given (``--pixel-size`` or ``meta.toml``, default
0.5 m).

A **labelled pairs folder** holds ``A/`` (before), ``B/`` (after) and ``label/`` (single-band
masks, > 0 = change) with the same file names, and may hold ``meta.toml`` with
``pixel_size = 0.3`` (metres).
"""

from __future__ import annotations

import os
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from detect import Scene
from errors import InputError

from .atomic import atomic_path

__all__ = [
    "DEFAULT_PIXEL_SIZE",
    "IMAGE_SUFFIXES",
    "ImagePair",
    "PairFiles",
    "list_pairs",
    "read_pair",
    "write_mask",
]

#: Metres per pixel of an image that does not say (plain PNG, no ``meta.toml``).
DEFAULT_PIXEL_SIZE = 0.5
#: File name suffixes read as images (lower case).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_GEOTIFF = (".tif", ".tiff")
_RGB = ("red", "green", "blue")
#: Colour interpretations that name a band.
_NAMED = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}


class _Raster(NamedTuple):
    """One image as read: float32 (n, h, w) data, band names, (h, w) valid mask or None, and
    its georeferencing (CRS and transform, both None for a plain image)."""

    data: np.ndarray
    bands: tuple[str, ...]
    valid: np.ndarray | None
    crs: Any
    transform: Affine | None


@dataclass(frozen=True, eq=False)
class ImagePair:
    """Two epochs of one place, ready for :mod:`detect`.

    Attributes
    ----------
    name : str
        The file stem (or the before file's stem for a plain pair).
    before, after : detect.Scene
        Each holds the image as ``satellite`` bands (float32, the file's own units), named
        ``red``, ``green``, ``blue`` (and any further named band), with alpha as the valid mask.
    pixel_size : float
        Metres per pixel.
    label : ndarray of bool, shape (h, w), or None
        Labelled change.
    crs, transform : CRS and Affine, or None
        The before image's georeferencing (None for plain images).
    """

    name: str
    before: Scene
    after: Scene
    pixel_size: float
    label: np.ndarray | None = None
    crs: Any = None
    transform: Affine | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the images."""
        return self.before.satellite.shape[1:]


@dataclass(frozen=True)
class PairFiles:
    """The files of one labelled pair and the pixel size its folder declares (None: not said)."""

    name: str
    before: Path
    after: Path
    label: Path
    pixel_size: float | None

    def read(self) -> ImagePair:
        """Read the pair and its label (see :func:`read_pair`)."""
        return read_pair(self.before, self.after, label=self.label, pixel_size=self.pixel_size)


def list_pairs(folder: str | os.PathLike) -> list[PairFiles]:
    """The labelled pairs of a folder holding ``A/``, ``B/``, ``label/`` (and ``meta.toml``).

    Parameters
    ----------
    folder : path

    Returns
    -------
    list of PairFiles
        Sorted by name.

    Raises
    ------
    errors.InputError
        A missing sub-folder, no images, an image without its partner in another sub-folder, or
        a bad ``meta.toml``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a pairs folder holding A/, B/ and label/")
    images = {part: _images(folder, part) for part in ("A", "B", "label")}
    names = set().union(*images.values())
    if not names:
        raise InputError(f"{folder}: A/, B/ and label/ hold no image ({', '.join(IMAGE_SUFFIXES)})")
    for part, found in images.items():
        missing = sorted(names - found.keys())
        if missing:
            where = next(p for p in images if missing[0] in images[p])
            raise InputError(
                f"{folder}/{part} has no image named {missing[0]!r} (as in {where}/)"
                + (f" nor {len(missing) - 1} more" if len(missing) > 1 else "")
                + "; every pair needs A/, B/ and label/ images of the same name"
            )
    pixel_size = _meta_pixel_size(folder)
    return [
        PairFiles(name, images["A"][name], images["B"][name], images["label"][name], pixel_size)
        for name in sorted(names)
    ]


def read_pair(
    before: str | os.PathLike,
    after: str | os.PathLike,
    *,
    label: str | os.PathLike | None = None,
    pixel_size: float | None = None,
) -> ImagePair:
    """Read two images (and optionally a label mask) of the same place and size.

    Parameters
    ----------
    before, after : path
        PNG, JPEG or GeoTIFF.
    label : path, keyword-only, optional
        Single-band mask, > 0 = change.
    pixel_size : float, keyword-only, optional
        Metres per pixel of images that do not carry their own; None means 0.5.

    Returns
    -------
    ImagePair

    Raises
    ------
    errors.InputError
        An unreadable file, images of different sizes or on different grids, a label of another
        size or with more than one band, a GeoTIFF in degrees, a pixel size that is not positive.
    """
    if pixel_size is not None and not pixel_size > 0:
        raise InputError(
            f"pixel size {pixel_size} is not positive; give metres per pixel, e.g. 0.5"
        )
    first, second = _read_image(Path(before)), _read_image(Path(after))
    _check_same_grid(Path(before), first, Path(after), second)
    mask = _read_label(Path(label), first.data.shape[1:], Path(before)) if label else None
    own = _georeferenced_pixel_size(Path(before), first)
    return ImagePair(
        name=Path(before).stem,
        before=_scene(first),
        after=_scene(second),
        pixel_size=own or pixel_size or DEFAULT_PIXEL_SIZE,
        label=mask,
        crs=first.crs,
        transform=first.transform,
    )


def write_mask(path: str | os.PathLike, mask: np.ndarray, *, like: ImagePair | None = None) -> Path:
    """Write a change mask as a single-band 0/255 image, atomically.

    A ``.tif``/``.tiff`` path gets a GeoTIFF with the georeferencing of ``like`` (when it has
    one); any other suffix is written by Pillow (PNG recommended).

    Parameters
    ----------
    path : path
    mask : ndarray of bool, shape (h, w)
    like : ImagePair, keyword-only, optional
        The pair the mask was made from.

    Returns
    -------
    Path
    """
    path = Path(path)
    values = np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8)
    if path.suffix.lower() in _GEOTIFF:
        profile: dict[str, Any] = dict(
            driver="GTiff",
            width=values.shape[1],
            height=values.shape[0],
            count=1,
            dtype="uint8",
            compress="deflate",
        )
        if like is not None and like.transform is not None:
            profile.update(crs=like.crs, transform=like.transform)
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.write(values, 1)
        return path
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise InputError(f"{path}: unknown image type {path.suffix!r}; write .png or .tif")
    with atomic_path(path) as tmp:
        Image.fromarray(values, mode="L").save(tmp, format=image_format)
    return path


def _images(folder: Path, part: str) -> dict[str, Path]:
    """Stem -> path of the images in ``folder/part``."""
    sub = folder / part
    if not sub.is_dir():
        raise InputError(
            f"{folder} has no {part}/ folder; a pairs folder holds A/ (before), B/ (after) "
            "and label/ (change masks) with the same file names"
        )
    out: dict[str, Path] = {}
    for path in sorted(sub.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in out:
            raise InputError(
                f"{sub} holds both {out[path.stem].name} and {path.name}; keep one image per name"
            )
        out[path.stem] = path
    return out


def _meta_pixel_size(folder: Path) -> float | None:
    meta = folder / "meta.toml"
    if not meta.exists():
        return None
    try:
        value = tomllib.loads(meta.read_text(encoding="utf-8")).get("pixel_size")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{meta}: not valid TOML ({exc}); write e.g. pixel_size = 0.5") from None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{meta}: pixel_size = {value!r}; give metres per pixel, e.g. 0.5")
    return float(value)


def _read_image(path: Path) -> _Raster:
    if path.suffix.lower() in _GEOTIFF:
        return _read_geotiff(path)
    try:
        with Image.open(path) as image:
            image = _plain_mode(image)
            array = np.asarray(image)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; give the path of an image") from None
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read the image ({exc}); give a PNG, JPEG or GeoTIFF"
        ) from None
    data = array.reshape(array.shape[:2] + (-1,)).transpose(2, 0, 1).astype(np.float32)
    valid = None
    if image.mode in ("LA", "RGBA"):
        valid, data = data[-1] > 0, data[:-1]
    if data.shape[0] == 1:
        return _Raster(np.repeat(data, 3, axis=0), _RGB, valid, None, None)
    return _Raster(data[:3], _RGB, valid, None, None)


def _plain_mode(image: Image.Image) -> Image.Image:
    """Palette and bilevel images as RGB(A) or L; other modes as they are."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("1", "CMYK", "YCbCr", "HSV"):
        return image.convert("L" if image.mode == "1" else "RGB")
    return image


def _read_geotiff(path: Path) -> _Raster:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read().astype(np.float32)
                interp = src.colorinterp
                valid = src.dataset_mask() > 0
                crs = src.crs
                transform = src.transform if src.crs is not None else None
    except RasterioIOError as exc:
        raise InputError(
            f"{path}: cannot read the GeoTIFF ({exc}); give a readable GeoTIFF"
        ) from None
    keep = [i for i, ci in enumerate(interp) if ci != ColorInterp.alpha]
    data = data[keep]
    names = [_NAMED.get(interp[i]) for i in keep]
    if data.shape[0] == 1:
        data, names = np.repeat(data, 3, axis=0), list(_RGB)
    elif not set(_RGB) <= set(names):
        names = list(_RGB) + [None] * (data.shape[0] - 3)
    order = [names.index(n) for n in _RGB]
    return _Raster(data[order], _RGB, None if valid.all() else valid, crs, transform)


def _read_label(path: Path, shape: tuple[int, int], before: Path) -> np.ndarray:
    if path.suffix.lower() in _GEOTIFF:
        try:
            with rasterio.open(path) as src:
                array = src.read()
        except RasterioIOError as exc:
            raise InputError(
                f"{path}: cannot read the label ({exc}); give a readable GeoTIFF"
            ) from None
        bands = array.shape[0]
        array = array[0]
    else:
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("L") if image.mode == "1" else image)
        except OSError as exc:
            raise InputError(
                f"{path}: cannot read the label ({exc}); give a PNG or GeoTIFF"
            ) from None
        bands = 1 if array.ndim == 2 else array.shape[2]
    if bands != 1:
        raise InputError(
            f"{path} has {bands} bands; give a single-band label mask (0 = no change, > 0 = change)"
        )
    if array.shape != shape:
        raise InputError(
            f"{path} is {_size(array.shape)} but {before.name} is {_size(shape)} pixels; "
            "give a label of the images' size"
        )
    return array > 0


def _check_same_grid(before: Path, first: _Raster, after: Path, second: _Raster) -> None:
    a, b = first.data.shape[1:], second.data.shape[1:]
    if a != b:
        raise InputError(
            f"{after} is {_size(b)} but {before} is {_size(a)} pixels; "
            "give two images of the same place and size"
        )
    if first.transform is not None and second.transform is not None:
        if first.crs != second.crs or not first.transform.almost_equals(second.transform, 1e-6):
            raise InputError(
                f"{after} is not on the grid of {before} (CRS or transform differ); "
                "resample one onto the other first"
            )


def _georeferenced_pixel_size(path: Path, raster: _Raster) -> float | None:
    """Metres per pixel of a GeoTIFF in a projected CRS; None for a plain image."""
    if raster.transform is None:
        return None
    if not raster.crs.is_projected:
        raise InputError(
            f"{path} is in {raster.crs} (degrees); reproject it to a projected CRS in metres"
        )
    return float(np.sqrt(abs(raster.transform.determinant)) * raster.crs.linear_units_factor[1])


def _scene(raster: _Raster) -> Scene:
    return Scene(satellite=raster.data, satellite_bands=raster.bands, satellite_valid=raster.valid)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"
