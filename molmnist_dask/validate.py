"""Checks of user-given values: each returns the value in its plain Python type, or raises
a one-line `InputError` naming what is wrong.

The one place these checks are written: options, sources, run files, the cellulose builders,
the settings and the ml readers all call them, so that a bad value reads the same everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError


def is_int(value) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """Whether ``value`` is a real number (Python or numpy, finite or not), not a bool."""
    return is_int(value) or isinstance(value, (float, np.floating))


def is_real(value) -> bool:
    """Whether ``value`` is a finite real number (Python or numpy), not a bool."""
    return is_number(value) and math.isfinite(value)


def integer(name: str, value, minimum: int = 1, optional: bool = False):
    """``value`` as an int of at least ``minimum``, or an InputError naming ``name``.

    Parameters
    ----------
    name : str
        What the value is, as the user wrote it (``"size"``, ``"molecule 'a': step"``).
    value
        The value given.
    minimum : int
        The smallest value allowed.
    optional : bool
        Whether None passes (returned as None).
    """
    if value is None and optional:
        return None
    if not is_int(value) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer of at least {minimum}")
        raise InputError(f"{name} must be {what}, got {value!r}")
    return int(value)


def positive_int(name: str, value, optional: bool = False):
    """``value`` as an int >= 1, or an InputError naming ``name`` (None passes when ``optional``)."""
    return integer(name, value, 1, optional)


def non_negative_int(name: str, value) -> int:
    """``value`` as an int >= 0 (a seed, a frame), or an InputError naming ``name``."""
    return integer(name, value, 0)


def positive_float(name: str, value, what: str = "") -> float:
    """``value`` as a finite positive float, or an InputError naming ``name`` and its unit
    ``what``."""
    if not (is_real(value) and value > 0):
        unit = f" of {what}" if what else ""
        raise InputError(f"{name} must be a positive number{unit}, got {value!r}")
    return float(value)


def non_negative_float(name: str, value, what: str = "") -> float:
    """``value`` as a finite float >= 0 (a duration that may be zero), or an InputError naming
    ``name`` and its unit ``what``."""
    if not (is_real(value) and value >= 0):
        unit = f" of {what}" if what else ""
        raise InputError(f"{name} must be zero or a positive number{unit}, got {value!r}")
    return float(value)


def one_of(name: str, value, allowed):
    """``value`` if it is one of ``allowed``, or an InputError naming ``name`` and the choices."""
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value
