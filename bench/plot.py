#!/usr/bin/env python3
"""Plot the output of bench/netem.sh.

    python3 bench/plot.py [DIR]          (DIR defaults to runs/netem)

Reads DIR/comm_W{W}_{rate}.jsonl and DIR/step_W{W}_{rate}.jsonl and writes, into DIR:
  comm_W{W}_{rate}.png   median time vs gradient size per method (log-log), one per W/rate
  speedup_vs_bandwidth.png  end-to-end step speedup of ef-signsgd over sgdm
                            (sgdm step_ms / ef-signsgd step_ms) vs link rate, one line per W
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import glob
import json
import os
import re
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("plot.py: matplotlib missing; apt-get install python3-matplotlib  (then run /usr/bin/python3 bench/plot.py)")
    sys.exit(2)

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


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "runs/netem"
    files = sorted(glob.glob(os.path.join(d, "*.jsonl")))
    if not files:
        print(f"plot.py: no *.jsonl in {d}")
        return 1
    steps = {}  # W -> [(bps, rate, speedup)]
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
        else:
            by = {r.get("optimizer"): r for r in rows}
            if "sgdm" in by and "ef-signsgd" in by and rate_bps(rate):
                sp = by["sgdm"]["step_ms"] / by["ef-signsgd"]["step_ms"]
                steps.setdefault(w, []).append((rate_bps(rate), rate, sp))
    if steps:
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        for w in sorted(steps):
            pts = sorted(steps[w])
            ax.plot([p[0] / 1e9 for p in pts], [p[2] for p in pts], marker="o", label=f"W={w}")
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
