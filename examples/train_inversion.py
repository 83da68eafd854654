"""Train the seed paper's encoder-decoder to invert diffraction patterns into shapes.

    pip install '.[ml]'
    molmnist build -o molecular-mnist              # the default dataset (a few minutes)
    python examples/train_inversion.py molecular-mnist -o inversion-out

The network (`molmnist_dask.ml.EncoderDecoder`: four 3x3 conv layers of 8, 16, 32, 64 kernels
with batch norm and ReLU, and a mirrored transposed-conv decoder) learns log-scaled diffraction
-> shape on the training variants and is scored on held-out variants (or, with
``--by molecule``, held-out molecules) by mean squared error and SSIM, against

- the mean training shape (what a network that ignored its input would learn),
- the shape of the nearest training pattern (L2 distance of the normalised log patterns),
- iterative phase retrieval (HIO + shrink-wrap + ER, `molmnist_dask.phase_retrieval`), which
  also gives the inference time to beat.

Images are downsampled to ``--size`` (default 64): shapes binned, patterns cropped to the
matching low-q region, so that training takes minutes on two CPU cores. Writes the weights
(``model.pt``), the scores (``metrics.json``) and a figure of predictions next to the truth
(``predictions.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default="molecular-mnist", help="store folder or .nc file")
    p.add_argument("-o", "--output", default="inversion-out", help="folder for weights, scores, figure")
    p.add_argument("--size", type=int, default=64, help="image side after downsampling (default 64)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--by", choices=["variant", "molecule"], default="variant", help="what is held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--pr-iterations", type=int, default=200, help="phase retrieval iterations")
    p.add_argument("--pr-images", type=int, default=50, help="test patterns given to phase retrieval")
    return p.parse_args(argv)


def stack(dataset, workers):
    """Every item of a dataset, read through a DataLoader (each worker opens the file itself)."""
    import torch
    from torch.utils.data import DataLoader

    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=64, num_workers=workers):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def train(args, train_set, val_set):
    import torch
    from torch.utils.data import DataLoader

    from molmnist_dask.ml import EncoderDecoder

    torch.manual_seed(args.seed)
    net = EncoderDecoder()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0,
                        generator=torch.Generator().manual_seed(args.seed))
    xv, yv = stack(val_set, 0)
    history = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        total, n = 0.0, 0
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n += len(x)
        sched.step()
        net.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.mse_loss(net(xv), yv))
        history.append({"epoch": epoch + 1, "train_mse": total / n, "val_mse": val})
        print(f"epoch {epoch + 1:3d}  train MSE {total / n:.5f}  val MSE {val:.5f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return net, history, time.perf_counter() - start


def scores(pred, truth):
    from molmnist_dask.ml import mse, ssim

    # SSIM's dynamic range: that of the (scaled) targets, the same for every method
    return {"mse": mse(pred, truth), "ssim": ssim(pred, truth, data_range=float(truth.max() - truth.min()))}


def main(argv=None) -> int:
    args = parse(argv)
    data = Path(args.data)
    if not data.exists():
        print(f"{data}: no dataset; build it first with: molmnist build -o {data}", file=sys.stderr)
        return 2
    import torch

    from molmnist_dask.ml import DiffractionDataset
    from molmnist_dask.phase_retrieval import align, retrieve

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(by=args.by, seed=args.seed, size=args.size, log="log1p", normalize="dataset")
    train_set = DiffractionDataset(data, "train", **common)
    val_set = DiffractionDataset(data, "val", stats=train_set.stats, **common)
    test_set = DiffractionDataset(data, "test", stats=train_set.stats, **common)
    print(f"{data}: {len(train_set)} training, {len(val_set)} validation, {len(test_set)} test items "
          f"(held-out {args.by}s), {args.size}x{args.size}; {train_set.stats}")

    net, history, train_seconds = train(args, train_set, val_set)
    torch.save(net.state_dict(), out / "model.pt")

    # -- test: the network and its baselines --------------------------------------------------
    xt, yt = stack(test_set, args.workers)
    xtr, ytr = stack(train_set, args.workers)
    net.eval()
    with torch.no_grad():
        net(xt[:8])  # warm up
        t0 = time.perf_counter()
        pred = net(xt)
        net_ms = (time.perf_counter() - t0) / len(xt) * 1e3
        t0 = time.perf_counter()
        for i in range(min(len(xt), 50)):
            net(xt[i: i + 1])
        net_ms_single = (time.perf_counter() - t0) / min(len(xt), 50) * 1e3
    truth = yt[:, 0].numpy().astype(np.float64)
    results = {"network": scores(pred[:, 0].numpy(), truth)}
    mean_image = ytr[:, 0].numpy().mean(axis=0)
    results["mean_training_shape"] = scores(np.broadcast_to(mean_image, truth.shape), truth)
    distances = torch.cdist(xt.flatten(1).double(), xtr.flatten(1).double())
    nearest = ytr[distances.argmin(dim=1), 0].numpy()
    results["nearest_training_pattern"] = scores(nearest, truth)

    # phase retrieval on the raw (cropped) intensities of the first test items
    k = min(args.pr_images, len(test_set))
    picks = np.linspace(0, len(test_set) - 1, k).round().astype(int)
    pr, pr_truth, pr_seconds = [], [], 0.0
    for i in picks:
        pattern, _ = test_set.read(int(i))
        t0 = time.perf_counter()
        estimate = retrieve(pattern, iterations=args.pr_iterations, seed=args.seed)
        pr_seconds += time.perf_counter() - t0
        target = truth[i]
        pr.append(align(test_set.transform_target(estimate), target))
        pr_truth.append(target)
    pr, pr_truth = np.array(pr), np.array(pr_truth)
    results["phase_retrieval"] = {**scores(pr, pr_truth), "images": int(k),
                                  "iterations": args.pr_iterations,
                                  "note": "scored after removing translation and twin (align)"}
    results["network_on_same_images"] = scores(pred[picks, 0].numpy(), pr_truth)
    timing = {"network_ms_per_image_batched": net_ms, "network_ms_per_image_single": net_ms_single,
              "phase_retrieval_ms_per_image": pr_seconds / k * 1e3,
              "phase_retrieval_iterations": args.pr_iterations,
              "torch_threads": torch.get_num_threads()}
    report = {"data": str(data), "held_out": args.by, "size": args.size, "epochs": args.epochs,
              "train_items": len(train_set), "test_items": len(test_set),
              "training_seconds": train_seconds, "history": history, "test": results, "timing": timing,
              "targets": "shape / largest training shape pixel (electrons)"}
    (out / "metrics.json").write_text(json.dumps(report, indent=1))

    print(f"\ntest ({len(test_set)} held-out {args.by} items; targets = shape / {train_set.stats.target_max:.4g} e)")
    print(f"{'method':28s} {'MSE':>10s} {'SSIM':>7s}")
    for name, r in results.items():
        print(f"{name:28s} {r['mse']:10.3e} {r['ssim']:7.3f}" + (f"   ({r['images']} images)" if "images" in r else ""))
    print(f"\nnetwork: {net_ms:.3f} ms/image batched, {net_ms_single:.2f} ms/image one at a time; "
          f"phase retrieval ({args.pr_iterations} iterations): {timing['phase_retrieval_ms_per_image']:.1f} ms/image")
    print(f"training: {train_seconds:.0f} s for {args.epochs} epochs")
    figure(out / "predictions.png", test_set, xt, truth, pred[:, 0].numpy(), nearest, picks, pr)
    print(f"wrote {out / 'model.pt'}, {out / 'metrics.json'}, {out / 'predictions.png'}")
    return 0


def figure(path, test_set, xt, truth, pred, nearest, picks, pr):
    """Rows: input pattern, truth, network, nearest training pattern, phase retrieval."""
    from matplotlib.figure import Figure

    chosen, seen = [], set()
    for j, i in enumerate(picks):  # one item per molecule, as far as they go
        m = int(test_set.items[i][0])
        if m not in seen:
            seen.add(m)
            chosen.append((j, int(i)))
    chosen = chosen[:10]
    rows = [("input: log pattern", lambda j, i: xt[i, 0].numpy()), ("truth", lambda j, i: truth[i]),
            ("network", lambda j, i: pred[i]), ("nearest training", lambda j, i: nearest[i]),
            ("phase retrieval", lambda j, i: pr[j])]
    fig = Figure(figsize=(1.6 * len(chosen) + 1.2, 1.6 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), len(chosen), squeeze=False)
    vmax = max(float(truth.max()), 1e-9)
    for c, (j, i) in enumerate(chosen):
        m, v = (int(a) for a in test_set.items[i])
        for r, (name, get) in enumerate(rows):
            ax = axes[r, c]
            image = get(j, i)
            ax.imshow(image, origin="lower", cmap="inferno" if r == 0 else "magma",
                      vmin=None if r == 0 else 0, vmax=None if r == 0 else vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"{test_set.molecules[m]}, variant {v}", fontsize=8)
    fig.suptitle("Held-out test items: shapes (electrons / training max) from diffraction", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
