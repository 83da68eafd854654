"""molmnist-dask: MD trajectories -> labelled shape images and diffraction patterns, on Dask.

The public API::

    from molmnist_dask import TrajectorySource, build_dataset, save_dataset, open_dataset

    build = plan(sources, size=256)   # a Build: the plan, as an object
    build.select(molecule=[0, 2]).save("out")   # rendered and written on the workers

Its names are imported when first used (PEP 562), so ``import molmnist_dask.cli`` is light and
the ``molmnist`` command answers Ctrl-C with one line even while dask and xarray load.
"""

from importlib import import_module

__version__ = "0.1.0"

#: Each public name and the module that defines it.
_API = {"TrajectorySource": ".sources", "BuildOptions": ".options", "Grid": ".grid",
        "build_dataset": ".dataset", "plan": ".planning", "Build": ".planning", "save_dataset": ".store", "open_dataset": ".store",
        "consolidate": ".store", "InputError": ".errors"}
_MODULES = ("cluster", "malloc", "planning", "store", "dataset", "options", "sources", "grid", "errors", "render", "cellulose",
            "ml", "analysis", "plot", "info", "runfile", "orientation")

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(_API[name], __name__), name)
    elif name in _MODULES:
        value = import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'molmnist_dask' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_API])
