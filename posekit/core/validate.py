"""Checks of what callers pass in, each failing with one sentence that says what is accepted.

Python API arguments (:func:`whole_number`, :func:`check_weights_argument`, :func:`check_device_type`)
raise :class:`~posekit.errors.ArgumentError`; records of JSON files (:func:`check_records`)
raise the error type of their file, naming the file, the record and the field.
"""
from __future__ import annotations

import math
import os
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
import torch

from posekit.errors import ArgumentError, PosekitError


def whole_number(value: object, name: str, meaning: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools, floats, strings and None are refused.

    Raises:
        ArgumentError: naming ``name``, what it means, and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(
            f"{name} must be a whole number >= {minimum} ({meaning}), got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise ArgumentError(f"{name} must be a whole number >= {minimum} ({meaning}), got {value}")
    return int(value)


def check_weights_argument(pose_weights: object) -> None:
    """Pose weights are a registered name, a file path, or None.

    Raises:
        ArgumentError: anything else (bytes, a number, a state_dict).
    """
    if pose_weights is not None and not isinstance(pose_weights, (str, os.PathLike)):
        raise ArgumentError(
            f"pose_weights of type {type(pose_weights).__name__}: expected a registered name (str), a checkpoint "
            "path (str or pathlib.Path), or None for random weights"
        )


def check_device_type(device: torch.device) -> None:
    """Refuse device types this torch build knows by name but cannot run posekit on.

    cpu, cuda and mps are checked by the caller; ``meta`` holds no data; any other accelerator
    (xpu, hpu, ...) must report itself available through ``torch.<type>.is_available()``.

    Raises:
        PosekitError: naming the device and what to use instead.
    """
    if device.type in ("cpu", "cuda", "mps"):
        return
    if device.type == "meta":
        raise PosekitError("device meta holds no data, so nothing can be computed on it; use device cpu or auto")
    backend = getattr(torch, device.type, None)
    is_available = getattr(backend, "is_available", None)
    if not callable(is_available) or not is_available():
        raise PosekitError(
            f"device {device} is not available: torch {torch.__version__} has no working {device.type} backend here; "
            "use device cpu, cuda or auto"
        )


# Kinds of JSON field values: a check and the words for what it accepts.
FieldKind = tuple[Callable[[object], bool], str]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return _number(value) and float(value).is_integer()


def _float64(value: object) -> bool:
    """A JSON number that fits a float64, NaN and infinity included (for values checked later)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, float) or abs(value) <= 1e308


# Ids must fit numpy's int64 (COCO's are below 10^12); 785.0 is the id 785.
_MAX_ID = 2**63 - 1


def _id(value: object) -> bool:
    if isinstance(value, float) and value.is_integer():  # is_integer() is False for NaN and infinity
        return 0 <= value <= _MAX_ID
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ID


def numbers(count: int, meaning: str, finite: bool = True) -> FieldKind:
    """A list of ``count`` numbers: finite ones, or (``finite=False``) any that fit a float64."""
    accepts = _number if finite else _float64
    return (
        lambda value: isinstance(value, list) and len(value) == count and all(map(accepts, value)),
        f"{count} numbers{meaning}" + (", all finite" if finite else ""),
    )


INTEGER: FieldKind = (_whole, "a whole number")
ID: FieldKind = (_id, f"a whole number from 0 to {_MAX_ID}")
NUMBER: FieldKind = (_number, "a finite number")
ANY_NUMBER: FieldKind = (_float64, "a number")
TEXT: FieldKind = (lambda value: isinstance(value, str) and value != "", "a non-empty string")
POSITIVE: FieldKind = (lambda value: _whole(value) and value > 0, "a whole number > 0")
FLAG: FieldKind = (lambda value: value in (0, 1) and not isinstance(value, float), "0 or 1")


def check_records(
    records: object,
    fields: Mapping[str, FieldKind],
    where: str,
    error: type[PosekitError],
    optional: Mapping[str, FieldKind] = MappingProxyType({}),
) -> None:
    """Check that ``records`` is a list of objects whose ``fields`` hold values of their kind, and
    whose ``optional`` fields, where present, too.

    Raises:
        error: naming ``where``, the first bad record's index and field, the value found and
            what is expected.
    """
    if not isinstance(records, list):
        raise error(f"{where}: expected a list of objects, got {type(records).__name__}")
    names = ", ".join(fields)
    kinds = {**fields, **optional}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise error(f"{where}[{index}]: is a {type(record).__name__}; expected an object with {names}")
        missing = [name for name in fields if name not in record]
        if missing:
            raise error(f"{where}[{index}]: missing field(s) {', '.join(missing)}; expected each entry to have {names}")
        for name, (accepts, expected) in kinds.items():
            if name in record and not accepts(record[name]):
                raise error(f"{where}[{index}].{name} is {_shown(record[name])}; expected {expected}")


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"

