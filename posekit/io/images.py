"""Reading images and checking person boxes before they reach the network.

Everything downstream works on one kind of image: an RGB ``uint8`` array of shape (H, W, 3),
upright as the camera meant it. :func:`load_image` turns whatever users hold (a path, a PIL image,
a numpy array in RGB or BGR order, any PIL mode) into that, and says clearly when a file is not an
image. :func:`find_images` expands the command line's files, folders and globs, and
:func:`sanitize_boxes` drops the boxes no crop can be made from, with a warning instead of a
traceback from deep inside the geometry.
"""
from __future__ import annotations

import glob
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from posekit.errors import ArgumentError, ImageReadError
from posekit.io.files import file_key

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]

_EXPECTED = "expected an image file (JPEG, PNG, BMP, TIFF, WebP, ...)"
_ACCEPTED = "expected a file path (str or pathlib.Path), a PIL image, or a numpy array (H, W, 3) uint8"
# How to turn the usual wrong kinds into an accepted one.
_HINTS = {
    "bytes": "; for encoded image bytes use PIL.Image.open(io.BytesIO(data))",
    "Tensor": "; for a (3, H, W) tensor pass tensor.permute(1, 2, 0).cpu().numpy()",
}


def load_image(source: ImageSource, channels: str = "rgb", upright: bool = True) -> np.ndarray:
    """Load an image as an RGB uint8 array, upright by default.

    Files and PIL images are turned upright by their EXIF orientation unless ``upright`` is
    False: COCO annotations refer to the stored pixel grid (the paper's loader reads with
    OpenCV's ``IMREAD_IGNORE_ORIENTATION``), so evaluation reads images as stored. Modes are converted as:
    ``L``/``1``/``CMYK``/``YCbCr`` -> RGB; ``LA``/``PA``/``RGBA`` and palette images with a
    transparent colour are composited on black, the same value the crops pad with, so
    transparent areas look like "outside the image" to the network; 16-bit (``I;16``) is scaled
    by 255/65535; 32-bit integer (``I``) as 16-bit when its values fit in 0..65535, else its
    min..max range is stretched to 0..255; float (``F``) is read as 0..1 when it fits, else
    min..max stretched.

    Args:
        source: a file path, a PIL image, or a numpy array (H, W), (H, W, 3) or (H, W, 4).
        channels: channel order of an array ``source``, ``"rgb"`` or ``"bgr"`` (OpenCV's);
            files and PIL images carry their own mode, so it must be ``"rgb"`` for them.
        upright: apply the EXIF orientation of files and PIL images.

    Returns:
        Shape: (H, W, 3) uint8, RGB.

    Raises:
        ImageReadError: the file is missing, empty, truncated, not a regular file or not an
            image, or the array has a shape or dtype that is not an image.
        ArgumentError: ``source`` is none of the accepted kinds (bytes, a tensor, None ...).
    """
    if channels not in ("rgb", "bgr"):
        raise ArgumentError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, channels)
    if not isinstance(source, (str, os.PathLike, Image.Image)):
        raise ArgumentError(f"image of type {type(source).__name__}: {_ACCEPTED}{_HINTS.get(type(source).__name__, '')}")
    if channels != "rgb":
        raise ArgumentError("channels='bgr' applies to numpy arrays only; files and PIL images know their own mode")
    image = source if isinstance(source, Image.Image) else _open_file(Path(source))
    return _pil_to_rgb(ImageOps.exif_transpose(image) if upright else image)


def _open_file(path: Path) -> Image.Image:
    """Open and fully decode ``path``; every failure names the file."""
    if not path.exists():
        raise ImageReadError(f"{path}: no such file; {_EXPECTED}")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder; {_EXPECTED} (posekit predict accepts folders)")
    if not path.is_file():  # a FIFO or a device would block or never end
        raise ImageReadError(f"{path}: not a regular file (a FIFO, device or socket); {_EXPECTED}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes); {_EXPECTED}")
    # PIL's warnings (a very large image, odd metadata) do not say which file: they are repeated below naming it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(path) as image:
                # load() decodes now, inside the try, so a truncated file fails here and not later.
                image.load()
        except UnidentifiedImageError:
            raise ImageReadError(f"{path}: not an image file PIL can read; {_EXPECTED}") from None
        except Image.DecompressionBombError as error:
            raise ImageReadError(f"{path}: image too large to decode safely ({error})") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageReadError(f"{path}: truncated or corrupt image ({error}); {_EXPECTED}") from None
    for warning in caught:
        warnings.warn(f"{path}: {warning.message}", warning.category, stacklevel=3)
    return image


def _array_to_rgb(array: np.ndarray, channels: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an array in ``channels`` order, via PIL for unusual shapes/dtypes."""
    if array.dtype.kind not in "buif":
        raise ImageReadError(f"image array of dtype {array.dtype}: expected numbers (uint8 for colour images)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or array.size == 0:
        raise ImageReadError(f"image array of shape {array.shape}: expected (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) gray")
    if array.ndim == 3 and channels == "bgr":
        # BGR -> RGB and BGRA -> RGBA: reverse the colour channels, keep alpha last.
        array = np.concatenate([array[..., 2::-1], array[..., 3:]], axis=2)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    if array.ndim == 3 and array.dtype != np.uint8:
        raise ImageReadError(f"colour image array of dtype {array.dtype}: expected uint8 (gray arrays may be uint16 or float)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind in "iu" and array.dtype != np.uint8:
        array = array.astype(np.int32)
    elif array.dtype.kind == "f":
        array = array.astype(np.float32)
    return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a PIL image of any mode (see :func:`load_image` for the rules)."""
    if image.mode == "RGB":
        return np.asarray(image).copy()
    if image.mode.startswith("I") or image.mode == "F":
        gray = _to_uint8(np.asarray(image), image.mode)
        return np.repeat(gray[..., None], 3, axis=2)
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("RGB")).copy()
    try:
        return np.asarray(image.convert("RGB")).copy()
    except ValueError as error:
        raise ImageReadError(f"image of mode {image.mode!r} cannot be converted to RGB ({error})") from None


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale one-channel 16-bit, 32-bit or float pixel values to uint8 without clipping them."""
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 65535.0
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values
    else:
        # Unknown range: stretch what is there, so the picture stays visible.
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.round(np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0) * 255).astype(np.uint8)


def _readable_suffixes() -> frozenset[str]:
    """File name endings of the formats PIL can open, e.g. ``.jpg``."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def natural_order(path: str | os.PathLike) -> tuple:
    """Sort key putting numbers in names in numeric order: ``frame2.jpg`` before ``frame10.jpg``.

    Digit runs compare as numbers, the rest as text; ties (``01`` and ``1``) fall back to the full text.
    """
    text = str(path)
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(part), "") if index % 2 else (1, 0, part) for index, part in enumerate(parts)), text


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, folders and glob patterns into a list of image paths.

    A file is kept whatever its name (:func:`load_image` says if it is not an image); a folder
    gives its image files (not its subfolders and not its hidden files, such as the ``._NAME``
    files macOS leaves on shared drives), and a warning names the other files it skipped; a glob
    gives its matches. Names sort naturally: numbers by value (``2.jpg`` before ``10.jpg``), so
    video frames named without leading zeros stay in order. Order follows ``inputs``. A file reached twice,
    under any spelling (``a.jpg``, ``./a.jpg``, its absolute path, a symlink or hard link to
    it), is kept once, under its first spelling. An input that exists neither as a path nor as
    a glob match, is empty, is not a regular file (a FIFO, a device) or is a folder that cannot
    be read gets a warning and is skipped.

    Raises:
        ImageReadError: nothing at all was found.
    """
    suffixes = _readable_suffixes()
    found: dict[tuple[int, int], Path] = {}

    def add(paths: Iterable[Path]) -> None:
        for path in paths:
            found.setdefault(file_key(path), path)

    for item in map(str, inputs):
        path = Path(item)
        if not item:  # Path("") is the current folder: an unset shell variable must not pick up everything there
            warnings.warn("an empty input (an unset variable?); skipped", stacklevel=2)
        elif path.is_dir():
            try:
                files = sorted((p for p in path.iterdir() if p.is_file()), key=natural_order)
            except OSError as error:
                warnings.warn(f"{path}: folder cannot be read ({error.strerror or error}); skipped", stacklevel=2)
                continue
            wanted = [p.suffix.lower() in suffixes and not p.name.startswith(".") for p in files]
            images = [p for p, keep in zip(files, wanted) if keep]
            skipped = [p.name for p, keep in zip(files, wanted) if not keep]
            if skipped:
                warnings.warn(f"{path}: skipped {len(skipped)} file(s) that are hidden or not images: "
                              f"{', '.join(skipped)}", stacklevel=2)
            add(images)
        elif path.is_file():
            add([path])
        elif path.exists():
            warnings.warn(f"{item}: not a regular file (a FIFO, device or socket); {_EXPECTED}; skipped", stacklevel=2)
        elif any(char in item for char in "*?[") and (matches := sorted(glob.glob(item), key=natural_order)):
            add(Path(m) for m in matches if Path(m).is_file())
        else:
            warnings.warn(f"{item}: no such file, folder or glob match; skipped", stacklevel=2)
    if not found:
        shown = ", ".join(map(str, inputs)) or "(no inputs)"
        raise ImageReadError(f"no images found in {shown}; expected image files, folders of images or glob patterns")
    return list(found.values())
