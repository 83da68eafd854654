"""Any orientation: adenylate kinase seen from random directions, each image's rotation known.

    python examples/orientations.py [OUT.png]      # OUT defaults to adk-orientations.png

Builds adk (MDAnalysisTests' PSF + DCD, 3341 atoms) with ``orientation="random"``: three frames
of its closed -> open transition, each turned four ways (``orientations_per_frame=4``), every
rotation drawn uniformly from SO(3) per (seed, molecule, variant) and recorded in the
``orientation`` coordinate (a unit quaternion, scalar last). The first column is the plain
projection along z for comparison. Under each image: its source frame, its quaternion and the
direction it is viewed along, in the molecule's own axes (the third row of the rotation).
"""

import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from MDAnalysisTests.datafiles import DCD, PSF  # noqa: E402

import molmnist_dask as mm  # noqa: E402
from molmnist_dask.orientation import matrices  # noqa: E402

FRAMES, TURNS = 3, 4
QMAX = 0.15  # cycles per angstrom shown of the patterns
RMAX = 35.0  # angstrom shown of the shapes


def build():
    """The random build and, for comparison, the plain z projection of the same frames."""
    src = mm.TrajectorySource("adk", PSF, DCD, selection="protein")
    options = dict(size=128, extent=90.0, variants=FRAMES, oversampling=4)  # fine q sampling
    turned = mm.build_dataset([src], **options, orientation="random", orientation_seed=1,
                              orientations_per_frame=TURNS).compute()
    plain = mm.build_dataset([src], **options).compute()
    return turned, plain


def caption(frame: int, q=None) -> str:
    if q is None:
        return f"frame {frame}\nalong z (no rotation)"
    view = matrices(q)[2]  # R maps the view direction onto +z: it is R's third row
    return (f"frame {frame}\nq = ({q[0]:+.2f}, {q[1]:+.2f}, {q[2]:+.2f}, {q[3]:.2f})\n"
            f"view ({view[0]:+.2f}, {view[1]:+.2f}, {view[2]:+.2f})")


def gallery(turned, plain):
    """Rows: shape and pattern of each frame; columns: z, then the frame's random turns."""
    cols = 1 + TURNS
    fig, axes = plt.subplots(2 * FRAMES, cols, figsize=(2.3 * cols, 2.75 * 2 * FRAMES))
    extent = [float(turned.x[0]), float(turned.x[-1])] * 2
    qext = [float(turned.qx[0]), float(turned.qx[-1])] * 2
    vmax = float(turned.shape.max())
    dmax = float(turned.diffraction.max())
    for f in range(FRAMES):
        frame = int(plain.frame[0, f])
        images = [(plain.shape[0, f], plain.diffraction[0, f], caption(frame))]
        for k in range(TURNS):
            v = f * TURNS + k
            q = turned.orientation.values[0, v]
            images.append((turned.shape[0, v], turned.diffraction[0, v], caption(frame, q)))
        for c, (shape, pattern, text) in enumerate(images):
            top, bottom = axes[2 * f, c], axes[2 * f + 1, c]
            top.imshow(shape, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=vmax)
            top.set_xlim(-RMAX, RMAX)
            top.set_ylim(-RMAX, RMAX)
            bottom.imshow(np.maximum(pattern, dmax * 1e-5), origin="lower", extent=qext,
                          cmap="viridis", norm=LogNorm(vmin=dmax * 1e-5, vmax=dmax))
            bottom.set_xlim(-QMAX, QMAX)  # the low |q| where the molecule's outline shows
            bottom.set_ylim(-QMAX, QMAX)
            bottom.set_xlabel(text, fontsize=7)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("adk seen from random directions: shape (electrons) above, "
                 f"|FFT|^2 (log, |q| < {QMAX} 1/A) below",
                 fontsize=10)
    fig.tight_layout()
    return fig


def main(out="adk-orientations.png"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        turned, plain = build()
    print(turned.orientation)
    # each recorded quaternion is unit and its rotation takes the view direction onto +z
    q = turned.orientation.values[0]
    assert np.allclose(np.linalg.norm(q, axis=1), 1)
    fig = gallery(turned, plain)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
