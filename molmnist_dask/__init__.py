"""molmnist-dask: MD trajectories -> labelled shape images and diffraction patterns, on Dask.

The public API::

    from molmnist_dask import TrajectorySource, build_dataset, save_dataset, open_dataset
"""

__version__ = "0.1.0"

from . import cluster  # noqa: E402,F401
from .dataset import build_dataset  # noqa: E402
from .errors import InputError  # noqa: E402
from .grid import Grid  # noqa: E402
from .options import BuildOptions  # noqa: E402
from .sources import TrajectorySource  # noqa: E402
from .store import consolidate, open_dataset, save_dataset  # noqa: E402

__all__ = ["TrajectorySource", "BuildOptions", "Grid", "build_dataset", "save_dataset", "open_dataset",
           "consolidate", "InputError", "__version__"]
