#!/usr/bin/env python3
"""Plot the output of bench/netem.sh.

    python3 bench/plot.py [DIR]          (DIR defaults to runs/netem)
    python3 bench/plot.py --print [DIR]  the numbers as text (no matplotlib needed)
    python3 bench/plot.py --help

Reads DIR/comm_W{W}_{rate}.jsonl and DIR/step_W{W}_{rate}.jsonl and writes, into DIR:
  comm_W{W}_{rate}.png   median time vs gradient size per method (log-log), one per W/rate
  speedup_vs_bandwidth.png  end-to-end step speedup of ef-signsgd over sgdm
                            (sgdm step_ms / ef-signsgd step_ms) vs link rate, one line per W
                            and exchange (allgather solid; two-phase, vote dashed)
and, from `netem.sh --peer` (DIR/peer_{model}_W{W}_{rate}_{row}_r{round}.jsonl, efsign-train
and bench/ddp_peer.py metrics):
  peer_speedup_vs_bandwidth.png  per model, speedup of every row over PyTorch DDP fp32
                            (ddp-fp32 ms / row ms) vs link rate, one line per row and W
--print adds the side-by-side peer table: per model, W and rate, every row's ms/step
(median over rounds of the median over epochs 2.. of the epoch's ms/step; the range over
rounds in brackets), images/s, test accuracy, bytes per rank per step, the ratio to the
compute-only row and the speedup over ddp-fp32; then the issue-14 targets, met or not.
Needs matplotlib for the PNGs (Debian: apt-get install python3-matplotlib).
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


# ---- netem.sh --peer ------------------------------------------------------------------

PEER_NAME = re.compile(r"^peer_([^_]+)_W(\d+)_([^_]+)_([^_]+)_r(\d+)\.jsonl$")
# Table order; rows not listed come after, by name.
PEER_ORDER = ["compute", "ddp-compute", "ef-signsgd", "ef-signsgd+overlap", "sgdm", "ddp-fp32", "ddp-fp16",
              "ddp-powersgd-r1", "ddp-powersgd-r4"]


def median(v):
    v = sorted(v)
    n = len(v)
    return None if n == 0 else (v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2]))


def peer_run(rows):
    """One row's run: ms/step = median over epochs 2.. (all, with one epoch) of the epoch's ms/step."""
    epochs = [r for r in rows if r.get("event") == "epoch" and "step_time_ms" in r]
    summ = [r for r in rows if r.get("event") == "summary"]
    if not epochs or not summ:
        return None
    timed = [r["step_time_ms"] for r in epochs if r.get("epoch", 1) > 1] or [r["step_time_ms"] for r in epochs]
    s = summ[-1]
    return {"ms": median(timed), "acc": s.get("test_acc"), "bytes": s.get("bytes_sent_per_step"),
            "batch": s.get("batch_size"), "steps": s.get("global_steps")}


def peer_results(d):
    """{(model, W, rate): {row: {"runs": [run per round], ...}}} from DIR/peer_*.jsonl."""
    out = {}
    for path in sorted(glob.glob(os.path.join(d, "peer_*.jsonl"))):
        m = PEER_NAME.match(os.path.basename(path))
        if not m:
            continue
        run = peer_run(load(path))
        if run is None:
            continue
        model, w, rate, row, rnd = m.group(1), int(m.group(2)), m.group(3), m.group(4), int(m.group(5))
        out.setdefault((model, w, rate), {}).setdefault(row, []).append((rnd, run))
    table = {}
    for key, rows in out.items():
        for row, runs in rows.items():
            runs.sort()
            ms = [r["ms"] for _, r in runs]
            accs = [r["acc"] for _, r in runs if r["acc"] is not None]
            table.setdefault(key, {})[row] = {
                "ms": median(ms), "lo": min(ms), "hi": max(ms), "rounds": len(runs),
                "acc": median(accs) if accs else None, "bytes": runs[0][1]["bytes"],
                "batch": runs[0][1]["batch"], "steps": runs[0][1]["steps"]}
    return table


def rate_key(rate):
    bps = rate_bps(rate)
    return (1, 0) if bps is None else (0, bps)   # shm (shared memory) after the links


def row_key(row):
    return (PEER_ORDER.index(row), row) if row in PEER_ORDER else (len(PEER_ORDER), row)


def print_peer(table):
    print()
    print("peer table (netem.sh --peer): ms/step = median over rounds [min-max] of the median over epochs 2.. "
          "of each run's ms/step; img/s = W x batch / ms/step; x compute = ms / compute ms; "
          "vs ddp-fp32 = ddp-fp32 ms / ms (> 1: faster than DDP fp32); compute = W copies of efsign-train "
          "at W = 1 on the same CPUs (no exchange; its accuracy is a single replica's)")
    print(f"{'model':<9} {'W':>2} {'rate':<7} {'row':<20} {'ms/step':>8} {'[min-max]':>15} {'rounds':>6} "
          f"{'img/s':>7} {'test acc':>8} {'B/step/rank':>12} {'x compute':>9} {'vs ddp-fp32':>11}")
    for key in sorted(table, key=lambda k: (k[0], k[1], rate_key(k[2]))):
        model, w, rate = key
        rows = table[key]
        comp = rows.get("compute", {}).get("ms")
        ddp = rows.get("ddp-fp32", {}).get("ms")
        for row in sorted(rows, key=row_key):
            r = rows[row]
            imgs = w * r["batch"] * 1e3 / r["ms"] if r["batch"] and r["ms"] else float("nan")
            xc = f"{r['ms'] / comp:.2f}x" if comp else "-"
            vs = f"{ddp / r['ms']:.2f}x" if ddp else "-"
            # compute: W replicas trained alone (W = 1 each): its accuracy is not comparable
            acc = "(W=1)" if row == "compute" else f"{100 * r['acc']:.2f}%" if r["acc"] is not None else "-"
            b = f"{r['bytes']:.0f}" if r["bytes"] is not None else "-"
            rng = f"[{r['lo']:.2f}-{r['hi']:.2f}]"
            print(f"{model:<9} {w:>2} {rate:<7} {row:<20} {r['ms']:>8.2f} {rng:>15} {r['rounds']:>6} {imgs:>7.0f} "
                  f"{acc:>8} {b:>12} {xc:>9} {vs:>11}")
    print()
    print("issue-14 targets, as measured here (one verdict per model, W and rate; '?' = a row is missing):")
    for key in sorted(table, key=lambda k: (k[0], k[1], rate_key(k[2]))):
        model, w, rate = key
        rows = table[key]
        ms = {k: v["ms"] for k, v in rows.items()}
        acc = {k: v["acc"] for k, v in rows.items()}

        def verdict(ok):
            return "met" if ok else "NOT met"

        parts = []
        if "ef-signsgd" in ms and "compute" in ms:
            x = ms["ef-signsgd"] / ms["compute"]
            parts.append(f"ef-signsgd ms / compute ms = {x:.2f} (<= 1.10: {verdict(x <= 1.10)})")
        else:
            parts.append("ef-signsgd vs compute ?")
        for ref in ("ddp-fp32", "ddp-powersgd-r4"):
            if "ef-signsgd" in ms and ref in ms:
                f = ms[ref] / ms["ef-signsgd"]
                da = (acc["ef-signsgd"] - acc[ref]) * 100 if acc.get("ef-signsgd") is not None and \
                    acc.get(ref) is not None else float("nan")
                parts.append(f"{ref} ms / ef-signsgd ms = {f:.2f} (faster: {verdict(f > 1.0)}; acc {da:+.2f} pt)")
            else:
                parts.append(f"vs {ref} ?")
        if "ef-signsgd+overlap" in ms and "ef-signsgd" in ms:
            o = ms["ef-signsgd"] / ms["ef-signsgd+overlap"]
            parts.append(f"ef-signsgd ms / +overlap ms = {o:.2f} (never slower: {verdict(o >= 1.0)})")
        if "sgdm" in ms and "ddp-fp32" in ms:
            g = ms["ddp-fp32"] / ms["sgdm"]
            parts.append(f"ddp-fp32 ms / sgdm ms = {g:.2f} (at least as fast: {verdict(g >= 1.0)})")
        print(f"  {model} W={w} {rate}: " + "; ".join(parts))


def main():
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(__doc__)
        return 0
    print_only = "--print" in args
    args = [a for a in args if a != "--print"]
    d = args[0] if args else "runs/netem"
    files = sorted(glob.glob(os.path.join(d, "*.jsonl")))
    if not files:
        print(f"plot.py: no *.jsonl in {d}")
        return 1
    steps = step_speedups(files)
    peers = peer_results(d)
    if print_only:  # the numbers behind the plots, no matplotlib needed
        if steps:
            print("W rate exchange step_speedup_vs_sgdm")
        for (w, label) in sorted(steps, key=lambda k: (k[0], EF_LABELS.index(k[1]))):
            for bps, rate, sp in sorted(steps[(w, label)]):
                print(f"{w} {rate} {exchange_of(label)} {sp:.2f}")
        if peers:
            print_peer(peers)
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
    if peers:
        models = sorted({k[0] for k in peers})
        rates = sorted({k[2] for k in peers}, key=rate_key)
        fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.8), squeeze=False)
        for ax, model in zip(axes[0], models):
            lines = {}
            for (m, w, rate), rows in peers.items():
                ref = rows.get("ddp-fp32", {}).get("ms")
                if m != model or not ref:
                    continue
                for row, r in rows.items():
                    if row != "ddp-fp32" and r["ms"]:
                        lines.setdefault((row, w), []).append((rates.index(rate), ref / r["ms"]))
            for (row, w) in sorted(lines, key=lambda k: (row_key(k[0]), k[1])):
                pts = sorted(lines[(row, w)])
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        linestyle="--" if row.startswith("ddp") else "-", label=f"{row}, W={w}")
            ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(rates)))
            ax.set_xticklabels(rates)
            ax.set_xlabel("link (tbf rate; shm = shared memory)")
            ax.set_ylabel("speedup over PyTorch DDP fp32 (ddp-fp32 ms / row ms)")
            ax.set_title(f"{model}: step time vs DDP fp32 (gloo)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        out = os.path.join(d, "peer_speedup_vs_bandwidth.png")
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
