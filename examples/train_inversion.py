"""Train networks to invert diffraction patterns into shapes, and score them honestly.

    pip install '.[ml]'
    molmnist build -o molecular-mnist              # the default dataset, 10 x 2,000
    python examples/train_inversion.py molecular-mnist -o inversion-out

The held-out set does not leak: by default whole contiguous ranges of the variant (twist) axis
are held out (``--by variant``, ``--stripes`` ranges of which 10% are test, 10% validation),
so a test item's nearest neighbours in twist are not in training; ``--by molecule`` holds out
whole molecules. (``--by random``, scattered variants, is the leaky split, for comparison.)

Trained within ``--minutes`` of wall time in all (default 10, on a 2-core CPU), at ``--size``
(default 64: shapes binned, patterns cropped to the matching low-q region):

- ``paper``: the seed paper's encoder-decoder, MSE loss (the reference row);
- ``paper+physics``: the same network, its output made non-negative and zero outside a support
  (where any training shape has electrons), plus a loss on the log pattern of the predicted
  shape (is the prediction consistent with what was measured?);
- ``unet+physics``: a small U-Net (skip connections) with the same support and losses.

Scored on held-out items (``--eval-images``, evenly spaced over the test split), side by side
with the mean training shape, the shape of the nearest training pattern, and HIO + ER phase
retrieval (`molmnist_dask.phase_retrieval`, scored after removing translation and twin), at
the network's single-image wall time and at convergence (``--pr-iterations``); clean and with
Poisson noise at ``--fluences`` photons per (cropped) pattern. Networks are trained on clean
patterns only. Writes ``metrics.json``, the weights and ``predictions.png``.

A run of seconds, on any small store (tests/test_examples.py runs it so)::

    python examples/train_inversion.py STORE -o out --size 16 --minutes 0.1 --max-epochs 2 \\
        --eval-images 4 --pr-iterations 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("paper", "paper+physics", "unet+physics")
SHARE = {"paper": 0.25, "paper+physics": 0.25, "unet+physics": 0.5}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default="molecular-mnist", help="store folder or .nc file")
    p.add_argument("-o", "--output", default="inversion-out", help="folder for weights, scores, figure")
    p.add_argument("--size", type=int, default=64, help="image side after downsampling (default 64)")
    p.add_argument("--by", choices=["variant", "molecule", "random"], default="variant",
                   help="held out: contiguous variant ranges (default), molecules, or scattered variants (leaks)")
    p.add_argument("--stripes", type=int, default=10, help="contiguous variant ranges (--by variant)")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall time, all networks together")
    p.add_argument("--max-epochs", type=int, help="at most this many epochs per network (default: "
                                                  "as many as --minutes allows)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--pattern-weight", type=float, default=0.05, help="weight of the log-pattern loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument("--eval-images", type=int, default=100, help="held-out items scored (all methods)")
    p.add_argument("--pr-iterations", type=int, default=500, help="phase retrieval iterations 'at convergence'")
    p.add_argument("--fluences", default="1e6,1e4", help="photons per pattern for the noisy scores")
    return p.parse_args(argv)


# -- training ---------------------------------------------------------------------------------

def support_mask(targets):
    """Where any training shape has electrons, grown by one pixel: the support constraint."""
    import torch

    seen = (targets[:, 0] > 0).any(dim=0).float()[None, None]
    return (torch.nn.functional.max_pool2d(seen, 3, stride=1, padding=1)[0, 0] > 0).float()


def make_net(name, support):
    from molmnist_dask.ml import EncoderDecoder, UNet

    if name == "paper":
        return EncoderDecoder()
    if name == "paper+physics":
        return constrained(EncoderDecoder(), support)
    return UNet(channels=(8, 16, 32, 64), support=support)


def constrained(net, support):
    """A network's output made non-negative and zero outside the support."""
    import torch

    class Constrained(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("support", support[None, None])

        def forward(self, x):
            return torch.nn.functional.softplus(self.net(x)) * self.support

    return Constrained()


def train(name, net, train_set, val, seconds, args):
    """Adam with a cosine learning rate over the wall-time budget; returns the history."""
    import torch

    from molmnist_dask.ml.models import pattern_loss

    stats = train_set.stats
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    loader = train_set.loader(batch_size=args.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed))
    physics = name.endswith("+physics")
    history, start, epoch = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds and epoch < (args.max_epochs or math.inf):
        net.train()
        total, n = 0.0, 0
        for x, y in loader:
            done = (time.perf_counter() - start) / seconds
            if done >= 1:
                break
            for group in opt.param_groups:
                group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * done))
            opt.zero_grad()
            pred = net(x)
            loss = torch.nn.functional.mse_loss(pred, y)
            if physics:
                loss = loss + args.pattern_weight * pattern_loss(
                    pred, x, stats.target_max, stats.mean, stats.std)
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
            n += len(x)
        epoch += 1
        net.eval()
        with torch.no_grad():
            val_mse = float(torch.nn.functional.mse_loss(net(val[0]), val[1]))
        history.append({"epoch": epoch, "train_loss": total / max(n, 1), "val_mse": val_mse,
                        "seconds": time.perf_counter() - start})
        print(f"  {name:14s} epoch {epoch:3d}  train loss {total / max(n, 1):.5f}  val MSE {val_mse:.5f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return history


# -- scoring ----------------------------------------------------------------------------------

def scores(pred, truth):
    from molmnist_dask.ml import mse, ssim

    # SSIM's dynamic range: that of the (scaled) targets, the same for every method
    return {"mse": mse(pred, truth), "ssim": ssim(pred, truth, data_range=float(truth.max() - truth.min()))}


def noisy(patterns, fluence, seed):
    """Poisson photon counts (``fluence`` expected per pattern), back in the pattern's units."""
    from molmnist_dask.noise import poisson_counts

    rng = np.random.default_rng(seed)
    out = np.empty_like(patterns)
    for i, p in enumerate(patterns):
        out[i] = poisson_counts(p, fluence, rng) * (p.sum() / fluence)
    return out


def phase_retrieval(patterns, truth, iterations, scale, seed):
    """HIO + shrink-wrap + ER on each pattern, aligned (translation, twin) to its truth."""
    from molmnist_dask.phase_retrieval import align, retrieve

    out, t0 = [], time.perf_counter()
    for pattern, target in zip(patterns, truth):
        estimate = retrieve(pattern, iterations=iterations, seed=seed,
                            er_iterations=max(1, iterations // 10),
                            shrinkwrap_every=20 if iterations >= 100 else 0)
        out.append(align(estimate / scale, target))
    return np.array(out), (time.perf_counter() - t0) / len(patterns) * 1e3


def evaluate(nets, train_set, test_set, args):
    """Every method on the same held-out items, clean and at each fluence."""
    import torch

    picks = np.linspace(0, len(test_set) - 1, min(args.eval_images, len(test_set))).round().astype(int)
    raw = [test_set.read(int(i)) for i in picks]
    patterns = np.array([r[0] for r in raw])
    truth = test_set.transform_target(np.array([r[1] for r in raw], np.float32)).astype(np.float64)
    xtr, ytr = (torch.from_numpy(a) for a in train_set.arrays())
    scale = train_set.stats.target_max
    mean_shape = ytr[:, 0].mean(dim=0).numpy().astype(np.float64)

    timing = {}
    with torch.no_grad():
        x0 = torch.from_numpy(test_set.transform_input(patterns.astype(np.float32)))[:, None]
        for name, net in nets.items():  # one image at a time, as phase retrieval works
            times = []
            for i in range(min(23, len(x0))):
                t0 = time.perf_counter()
                net(x0[i: i + 1])
                times.append(time.perf_counter() - t0)
            timing[name] = float(np.median(times[3:] or times)) * 1e3
    one = patterns[0]
    t0 = time.perf_counter()
    phase_retrieval(one[None], truth[:1], 50, scale, args.seed)
    pr_iteration_ms = (time.perf_counter() - t0) / 50 * 1e3
    reference = timing.get("paper", min(timing.values(), default=1.0))
    equal = max(1, round(reference / pr_iteration_ms))  # the paper's network's time per image

    conditions = [("clean", None)] + [(f"{f:.0e} photons", f) for f in args.fluences]
    table, shown = {}, {}
    for label, fluence in conditions:
        if fluence is None:
            p, x = patterns, x0
        else:
            p = noisy(patterns, fluence, args.seed)
            x = torch.from_numpy(test_set.transform_input(p.astype(np.float32)))[:, None]
        row = {}
        with torch.no_grad():
            for name, net in nets.items():
                pred = net(x)[:, 0].numpy().astype(np.float64)
                row[name] = scores(pred, truth)
                shown.setdefault(label, {})[name] = pred
        row["mean training shape"] = scores(np.broadcast_to(mean_shape, truth.shape), truth)
        nearest = ytr[torch.cdist(x.flatten(1), xtr.flatten(1)).argmin(dim=1), 0].numpy().astype(np.float64)
        row["nearest training pattern"] = scores(nearest, truth)
        shown[label]["nearest training pattern"] = nearest
        fast, fast_ms = phase_retrieval(p, truth, equal, scale, args.seed)
        row[f"HIO+ER, {equal} it (equal time)"] = {**scores(fast, truth), "ms": fast_ms}
        slow, slow_ms = phase_retrieval(p, truth, args.pr_iterations, scale, args.seed)
        row[f"HIO+ER, {args.pr_iterations} it"] = {**scores(slow, truth), "ms": slow_ms}
        shown[label]["HIO+ER"] = slow
        table[label] = row
        print(f"  scored {label}", flush=True)
    return table, timing, picks, truth, shown, x0


def print_table(table, timing):
    conditions = list(table)
    methods = list(table[conditions[0]])
    head = f"{'method':34s}" + "".join(f" {c:>22s}" for c in conditions) + "   ms/image"
    print(head + "\n" + f"{'':34s}" + "".join(f" {'MSE':>12s} {'SSIM':>9s}" for _ in conditions))
    for m in methods:
        cells = "".join(f" {table[c][m]['mse']:12.3e} {table[c][m]['ssim']:9.3f}" for c in conditions)
        ms = timing.get(m, table[conditions[0]][m].get("ms"))
        print(f"{m:34s}{cells}   {'' if ms is None else f'{ms:.2f}'}")


def main(argv=None) -> int:
    args = parse(argv)
    data = Path(args.data)
    if not data.exists():
        print(f"{data}: no dataset; build it first with: molmnist build -o {data}", file=sys.stderr)
        return 2
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names or set(names) - set(MODELS):
        print(f"--models: choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    args.fluences = [float(f) for f in args.fluences.split(",") if f.strip()]
    import torch

    from molmnist_dask.ml import DiffractionDataset

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(by=args.by, stripes=args.stripes, seed=args.seed, size=args.size)
    t0 = time.perf_counter()
    train_set = DiffractionDataset(data, "train", in_memory=True, **common)
    val_set = DiffractionDataset(data, "val", stats=train_set.stats, in_memory=True, **common)
    test_set = DiffractionDataset(data, "test", stats=train_set.stats, **common)
    held = np.unique(test_set.items[:, 1 if args.by != "molecule" else 0])
    print(f"{data}: {len(train_set)} training, {len(val_set)} validation, {len(test_set)} test items "
          f"(held out by {args.by}: {_ranges(held)}), {args.size}x{args.size}; read in "
          f"{time.perf_counter() - t0:.0f} s; {train_set.stats}", flush=True)

    val = tuple(torch.from_numpy(a) for a in val_set.arrays())
    support = support_mask(torch.from_numpy(train_set.arrays()[1]))
    nets, histories = {}, {}
    total = sum(SHARE[n] for n in names)
    for name in names:
        torch.manual_seed(args.seed)
        net = make_net(name, support)
        histories[name] = train(name, net, train_set, val, 60 * args.minutes * SHARE[name] / total, args)
        net.eval()
        nets[name] = net
        torch.save(net.state_dict(), out / f"model-{name.replace('+', '-')}.pt")

    table, timing, picks, truth, shown, x0 = evaluate(nets, train_set, test_set, args)
    print(f"\nheld-out {args.by} items ({len(picks)} of {len(test_set)}); targets = shape / "
          f"{train_set.stats.target_max:.4g} electrons; SSIM over the targets' range")
    print_table(table, timing)
    report = {"data": str(data), "held_out": args.by, "held_out_values": held.tolist(), "size": args.size,
              "train_items": len(train_set), "test_items": len(test_set), "scored_items": len(picks),
              "minutes": args.minutes, "history": histories, "test": table, "network_ms_single": timing,
              "torch_threads": torch.get_num_threads(),
              "targets": "shape / largest training shape pixel (electrons)"}
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    figure(out / "predictions.png", test_set, picks, truth, shown["clean"], x0)
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.png'} and the weights")
    return 0


def _ranges(values) -> str:
    """'0-9, 50-59' for a sorted integer array."""
    if not len(values):
        return "none"
    cuts = np.flatnonzero(np.diff(values) > 1) + 1
    return ", ".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else f"{g[0]}" for g in np.split(values, cuts))


def figure(path, test_set, picks, truth, shown, x0):
    """Columns: one held-out item per molecule; rows: input, truth, each method."""
    from matplotlib.figure import Figure

    chosen, seen = [], set()
    for j, i in enumerate(picks):
        m = int(test_set.items[i][0])
        if m not in seen:
            seen.add(m)
            chosen.append((j, int(i)))
    chosen = chosen[:10]
    rows = [("input: log pattern", lambda j: x0[j, 0].numpy()), ("truth", lambda j: truth[j])]
    rows += [(name, (lambda j, a=a: a[j])) for name, a in shown.items()]
    fig = Figure(figsize=(1.6 * len(chosen) + 1.2, 1.6 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), len(chosen), squeeze=False)
    vmax = max(float(truth.max()), 1e-9)
    for c, (j, i) in enumerate(chosen):
        m, v = (int(a) for a in test_set.items[i])
        for r, (name, get) in enumerate(rows):
            ax = axes[r, c]
            ax.imshow(get(j), origin="lower", cmap="inferno" if r == 0 else "magma",
                      vmin=None if r == 0 else 0, vmax=None if r == 0 else vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
            if r == 0:
                ax.set_title(f"{test_set.molecules[m]}, variant {v}", fontsize=8)
    fig.suptitle("Held-out items: shapes (electrons / training max) from clean diffraction", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
