#!/usr/bin/env python3
"""Per-epoch curves of a bench/reproduce.sh output directory.

    python3 bench/plot_curves.py OUT

Reads OUT/{opt}_b{global}_s{seed}.jsonl (efsign-train --metrics-out) and writes,
per global batch size, OUT/curves_b{global}_acc.png (train and test accuracy per
epoch) and OUT/curves_b{global}_loss.png (train and test loss per epoch), one
line per optimizer, averaged over the seeds that have that epoch, with the band
of min to max over the seeds. A resumed run's file holds the record of the epoch
it stopped in twice (the partial epoch, then the whole one): the last one counts.
"""
import glob
import json
import os
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

ORDER = ["sgdm", "signsgd", "signum", "ef-signsgd"]
LABEL = {"sgdm": "SGDM", "signsgd": "signSGD", "signum": "signum", "ef-signsgd": "EF-SignSGD"}
NAME = re.compile(r"^(?P<opt>.+)_b(?P<g>\d+)_s(?P<seed>\d+)\.jsonl$")


def load(out):
    # data[g][opt][seed] = list of epoch records
    data = defaultdict(lambda: defaultdict(dict))
    for path in sorted(glob.glob(os.path.join(out, "*_b*_s*.jsonl"))):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        epochs = {}
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") == "epoch":
                    epochs[int(rec["epoch"])] = rec  # the last record of an epoch counts
        if epochs:
            data[int(m["g"])][m["opt"]][int(m["seed"])] = [epochs[e] for e in sorted(epochs)]
    return data


def mean_curve(runs, key):
    """Epochs, and per epoch the mean, min and max over the seeds."""
    per_epoch = defaultdict(list)
    for epochs in runs.values():
        for rec in epochs:
            if rec.get(key) is not None:
                per_epoch[int(rec["epoch"])].append(float(rec[key]))
    xs = sorted(per_epoch)
    return (xs, [sum(per_epoch[x]) / len(per_epoch[x]) for x in xs], [min(per_epoch[x]) for x in xs],
            [max(per_epoch[x]) for x in xs])


def plot(out, g, by_opt, kind):
    keys = ("train_acc", "test_acc") if kind == "acc" else ("train_loss", "test_loss")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    opts = [o for o in ORDER if o in by_opt] + sorted(o for o in by_opt if o not in ORDER)
    for ax, key in zip(axes, keys):
        for opt in opts:
            xs, ys, lo, hi = mean_curve(by_opt[opt], key)
            if not xs:
                continue
            if kind == "acc":
                ys, lo, hi = ([100 * y for y in v] for v in (ys, lo, hi))
            nseeds = len(by_opt[opt])
            lab = LABEL.get(opt, opt) + (f" (mean of {nseeds} seeds, band: min-max)" if nseeds > 1 else "")
            (line,) = ax.plot(xs, ys, marker="o", label=lab)
            if nseeds > 1:
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key.replace("_", " ") + (" (%)" if kind == "acc" else ""))
        ax.set_title(f"{key.replace('_', ' ')}, global batch {g}")
        ax.grid(True, alpha=0.3)
        if kind == "loss":
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out, f"curves_b{g}_{kind}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    data = load(out)
    if not data:
        print(f"plot_curves.py: no epoch records in {out}/*_b*_s*.jsonl", file=sys.stderr)
        return 1
    for g in sorted(data, reverse=True):
        for kind in ("acc", "loss"):
            print("wrote", plot(out, g, data[g], kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
