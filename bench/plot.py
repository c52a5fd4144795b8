#!/usr/bin/env python3
"""Plot the output of bench/netem.sh.

    python3 bench/plot.py [DIR]          (DIR defaults to runs/netem)
    python3 bench/plot.py --print [DIR]  the step speedups as text (no matplotlib needed)

Reads DIR/comm_W{W}_{rate}.jsonl and DIR/step_W{W}_{rate}.jsonl and writes, into DIR:
  comm_W{W}_{rate}.png   median time vs gradient size per method (log-log), one per W/rate
  speedup_vs_bandwidth.png  end-to-end step speedup of ef-signsgd over sgdm
                            (sgdm step_ms / ef-signsgd step_ms) vs link rate, one line per W
                            and exchange (allgather solid; two-phase, vote dashed)
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import glob
import json
import os
import re
import sys

# The sign rows drawn against sgdm in speedup_vs_bandwidth.png, when present.
EF_LABELS = ["ef-signsgd", "ef-signsgd/two-phase", "ef-signsgd/vote"]

NAME = re.compile(r"^(comm|step)_W(\d+)_(.+)\.jsonl$")
UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def rate_bps(rate):
    m = re.match(r"^([0-9.]+)([kmgt]?)(bit|bps)$", rate.lower())
    if not m:
        return None
    v = float(m.group(1)) * UNITS[m.group(2)]
    return v * 8 if m.group(3) == "bps" else v


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def step_speedups(files):
    """{(W, label): [(bps, rate, sgdm step_ms / label step_ms)]} from the step files."""
    steps = {}
    for path in files:
        m = NAME.match(os.path.basename(path))
        if not m or m.group(1) != "step" or not rate_bps(m.group(3)):
            continue
        w, rate = int(m.group(2)), m.group(3)
        # One row per label (sgdm, ef-signsgd, ef-signsgd/two-phase, ...+overlap);
        # files from before labels existed have one row per optimizer.
        by = {r.get("label", r.get("optimizer")): r for r in load(path)}
        if "sgdm" not in by:
            continue
        for label in EF_LABELS:
            if label in by:
                sp = by["sgdm"]["step_ms"] / by[label]["step_ms"]
                steps.setdefault((w, label), []).append((rate_bps(rate), rate, sp))
    return steps


def exchange_of(label):
    return label.split("/")[1] if "/" in label else "allgather"


def main():
    args = sys.argv[1:]
    print_only = "--print" in args
    args = [a for a in args if a != "--print"]
    d = args[0] if args else "runs/netem"
    files = sorted(glob.glob(os.path.join(d, "*.jsonl")))
    if not files:
        print(f"plot.py: no *.jsonl in {d}")
        return 1
    steps = step_speedups(files)
    if print_only:  # the numbers behind speedup_vs_bandwidth.png, no matplotlib needed
        print("W rate exchange step_speedup_vs_sgdm")
        for (w, label) in sorted(steps, key=lambda k: (k[0], EF_LABELS.index(k[1]))):
            for bps, rate, sp in sorted(steps[(w, label)]):
                print(f"{w} {rate} {exchange_of(label)} {sp:.2f}")
        return 0
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib missing; apt-get install python3-matplotlib  (then run /usr/bin/python3 bench/plot.py)")
        return 2
    written = []
    for path in files:
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        kind, w, rate = m.group(1), int(m.group(2)), m.group(3)
        rows = load(path)
        if kind == "comm":
            fig, ax = plt.subplots(figsize=(6.4, 4.8))
            for method in ("fp32-allreduce", "compressed", "two-phase", "vote", "allgather"):
                pts = sorted((r["elements"], r["time_ms_median"]) for r in rows if r.get("method") == method)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("gradient size d (elements)")
            ax.set_ylabel("median time (ms)")
            ax.set_title(f"exchange time, W={w}, link {rate}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
            out = os.path.join(d, f"comm_W{w}_{rate}.png")
            fig.tight_layout()
            fig.savefig(out, dpi=100)
            plt.close(fig)
            written.append(out)
    if steps:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        for (w, label) in sorted(steps, key=lambda k: (k[0], EF_LABELS.index(k[1]))):
            pts = sorted(steps[(w, label)])
            exchange = exchange_of(label)
            ax.plot([p[0] / 1e9 for p in pts], [p[2] for p in pts], marker="o",
                    linestyle="-" if exchange == "allgather" else "--", label=f"W={w}, {exchange}")
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("link rate (Gbit/s, tbf)")
        ax.set_ylabel("step speedup, sgdm ms / ef-signsgd ms")
        ax.set_title("end-to-end step speedup of ef-signsgd over sgdm")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        out = os.path.join(d, "speedup_vs_bandwidth.png")
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
