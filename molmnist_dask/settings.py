"""The package's own settings: ``molmnist.*`` in dask.config, every default in molmnist.yaml.

They change how a build is cut into tasks and how the store's lock beats, never a byte of
the output (what a build computes is `molmnist_dask.options.BuildOptions`). As dask-jobqueue
does, the defaults of ``molmnist.yaml`` beside this file are loaded into dask.config when this
module is first imported (by whatever reads a setting); override them in
``~/.config/dask/*.yaml``, with environment variables (``DASK_MOLMNIST__PART_FRAMES=500``),
with ``dask.config.set({"molmnist.part-frames": 500})``, or per call where a function takes
them as keywords.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.utils
import yaml

from .errors import InputError
from .validate import is_real, positive_int

with open(Path(__file__).with_name("molmnist.yaml")) as _f:
    dask.config.update_defaults(yaml.safe_load(_f))


def setting(key: str, value=None) -> int:
    """A whole-number ``molmnist.*`` setting: ``value`` when given, else dask.config's (sizes
    such as ``"1GiB"`` in bytes).

    Parameters
    ----------
    key : str
        The name under ``molmnist.``, e.g. ``"part-frames"``.
    value : optional
        A per-call override; None takes the configured value.
    """
    if value is None:
        value = dask.config.get(f"molmnist.{key}")
    if key.endswith("-bytes") and isinstance(value, str):
        value = dask.utils.parse_bytes(value)
    return positive_int(f"molmnist.{key}", value)


def seconds(key: str) -> float:
    """A ``molmnist.*`` duration in seconds: a finite positive number."""
    value = dask.config.get(f"molmnist.{key}")
    if not (is_real(value) and value > 0):
        raise InputError(f"molmnist.{key} must be a positive number of seconds, got {value!r}")
    return float(value)
