#!/usr/bin/env python3
"""Alpha-beta cost model of efsign's exchanges, swept to W = 1024 (bench/README.md).

    bench/cost_model.py [--params 11220132 --layers 62] [--alpha-us 25]
                        [--rates 1,10,100] [--measured runs/netem6-conv]
                        [--measured-alpha-ms 0.019] [--measured-rate-gbit 0.959]
                        [--png runs/cost_model.png]

Per step, one gradient of d fp32 elements in L layers, W ranks, alpha the latency
of one message, beta the link rate (bytes/s). Bytes each rank puts on the wire
(what efsign counts as wire bytes, src/comm/communicator.h):

  fp32 ring allreduce  2(W-1) alpha + 2(W-1)/W * 4d / beta
  allgather (and vote) (W-1) alpha  + (W-1) * m / beta,            m = 4 ceil(d/32) + 4L
  two-phase            2(W-1) alpha + 2(W-1)/W * (m + 4 (L + W)) / beta
                       (all-to-all to every rank, then allgather of one chunk each;
                        the 4 (L + W) is one scale per segment, an upper bound)

Prints the sweep as a Markdown table, the crossover world sizes, and with
--measured the predicted vs measured exchange time of efsign-bench comm JSON
(files comm_W*_*.jsonl). --png needs matplotlib (/usr/bin/python3 on Debian with
python3-matplotlib).
"""
import argparse
import glob
import json
import math
import os
import sys


def times(W, d, L, alpha, beta):
    m = 4 * math.ceil(d / 32) + 4 * L
    return {
        "fp32-allreduce": 2 * (W - 1) * alpha + 2 * (W - 1) / W * 4 * d / beta,
        "allgather": (W - 1) * alpha + (W - 1) * m / beta,
        "two-phase": 2 * (W - 1) * alpha + 2 * (W - 1) / W * (m + 4 * (L + W)) / beta,
    }


def wire_bytes(W, d, L):
    m = 4 * math.ceil(d / 32) + 4 * L
    return {
        "fp32-allreduce": 2 * (W - 1) / W * 4 * d,
        "allgather": (W - 1) * m,
        "two-phase": 2 * (W - 1) / W * (m + 4 * (L + W)),
    }


def first_w(pred, ws):
    for w in ws:
        if pred(w):
            return w
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=int, default=11220132, help="d (default: ResNet-18, CIFAR-100)")
    ap.add_argument("--layers", type=int, default=62, help="L")
    ap.add_argument("--alpha-us", type=float, default=25.0, help="latency per message, microseconds")
    ap.add_argument("--rates", default="1,10,100", help="link rates in Gbit/s, comma-separated")
    ap.add_argument("--measured", default="", help="directory with efsign-bench comm JSON (comm_W*_*.jsonl)")
    ap.add_argument("--measured-alpha-ms", type=float, default=0.019,
                    help="alpha of the emulated link (0.019: one 8-byte allgather between 2 emulated hosts, median, bench/netem.sh --alpha, NETEM.md)")
    ap.add_argument("--measured-rate-gbit", type=float, default=0.959, help="measured rate of the emulated link")
    ap.add_argument("--png", default="", help="write a plot here (needs matplotlib)")
    a = ap.parse_args()

    d, L, alpha = a.params, a.layers, a.alpha_us * 1e-6
    rates = [float(r) for r in a.rates.split(",")]
    ws = [2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    print(f"# cost model: d = {d:,} parameters, L = {L} layers, alpha = {a.alpha_us:g} us")
    print()
    print("Wire bytes per rank per step (MB):")
    print()
    print("| W | fp32 ring allreduce | allgather / vote | two-phase | allgather / fp32 | two-phase / fp32 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in ws:
        b = wire_bytes(w, d, L)
        print(f"| {w} | {b['fp32-allreduce'] / 1e6:.2f} | {b['allgather'] / 1e6:.2f} | {b['two-phase'] / 1e6:.3f} "
              f"| {b['allgather'] / b['fp32-allreduce']:.3f} | {b['two-phase'] / b['fp32-allreduce']:.4f} |")
    print()
    for gbit in rates:
        beta = gbit * 1e9 / 8
        print(f"Predicted exchange time (ms) at {gbit:g} Gbit/s:")
        print()
        print("| W | fp32 ring allreduce | allgather / vote | two-phase | fastest |")
        print("|---:|---:|---:|---:|---|")
        for w in ws:
            t = times(w, d, L, alpha, beta)
            best = min(t, key=t.get)
            print(f"| {w} | {t['fp32-allreduce'] * 1e3:.2f} | {t['allgather'] * 1e3:.2f} | "
                  f"{t['two-phase'] * 1e3:.2f} | {best} |")
        all_w = list(range(2, 1025))
        ag_loses = first_w(lambda w: times(w, d, L, alpha, beta)["allgather"] >= times(w, d, L, alpha, beta)["fp32-allreduce"], all_w)
        tp_wins = first_w(lambda w: times(w, d, L, alpha, beta)["two-phase"] < times(w, d, L, alpha, beta)["allgather"], all_w)
        tp_loses = first_w(lambda w: times(w, d, L, alpha, beta)["two-phase"] >= times(w, d, L, alpha, beta)["fp32-allreduce"], all_w)
        print()
        print(f"Crossovers at {gbit:g} Gbit/s: allgather stops beating fp32 at W = {ag_loses}; "
              f"two-phase beats allgather from W = {tp_wins}; two-phase stops beating fp32 at W = {tp_loses} "
              f"(None: not up to 1024)")
        print()

    measured = []
    if a.measured:
        for path in sorted(glob.glob(os.path.join(a.measured, "comm_W*_*.jsonl"))):
            with open(path) as f:
                for line in f:
                    r = json.loads(line)
                    if r["method"] in ("fp32-allreduce", "compressed", "two-phase", "vote"):
                        measured.append(r)
        if not measured:
            print(f"no comm_W*_*.jsonl in {a.measured}", file=sys.stderr)
            return 2
        ma, mb = a.measured_alpha_ms * 1e-3, a.measured_rate_gbit * 1e9 / 8
        print(f"Predicted (alpha = {a.measured_alpha_ms:g} ms, beta = {a.measured_rate_gbit:g} Gbit/s, one layer) "
              f"vs measured (median) exchange time, from {a.measured}:")
        print()
        print("| W | d | method | wire MB/rank (measured) | predicted ms | measured ms | measured / predicted |")
        print("|---:|---:|---|---:|---:|---:|---:|")
        for r in measured:
            key = {"compressed": "allgather", "vote": "allgather"}.get(r["method"], r["method"])
            p = times(r["world"], r["elements"], 1, ma, mb)[key] * 1e3
            print(f"| {r['world']} | {r['elements']:.0e} | {r['method']} | {r['wire_bytes_per_rank'] / 1e6:.3f} | "
                  f"{p:.1f} | {r['time_ms_median']:.1f} | {r['time_ms_median'] / p:.2f} |")
        print()

    if a.png:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--png needs matplotlib: apt-get install python3-matplotlib, run with /usr/bin/python3",
                  file=sys.stderr)
            return 2
        all_w = [2 ** k for k in range(1, 11)]
        panels = len(rates) + (1 if measured else 0)
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
        if measured:  # the emulated link: model with its alpha and beta, measured medians as markers
            ax = axes[0][-1]
            dmax = max(r["elements"] for r in measured)
            ma, mb = a.measured_alpha_ms * 1e-3, a.measured_rate_gbit * 1e9 / 8
            small_w = list(range(2, 17))
            for method, style, marker, names in (("fp32-allreduce", "k-", "ko", ("fp32-allreduce",)),
                                                 ("allgather", "b-", "bs", ("compressed",)),
                                                 ("two-phase", "r-", "r^", ("two-phase",))):
                ax.plot(small_w, [times(w, dmax, 1, ma, mb)[method] * 1e3 for w in small_w], style,
                        label=f"{method} (model)")
                pts = [(r["world"], r["time_ms_median"]) for r in measured
                       if r["elements"] == dmax and r["method"] in names]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, label=f"{names[0]} (measured)")
            ax.set_yscale("log")
            ax.set_xlabel("world size W")
            ax.set_ylabel("exchange ms")
            ax.set_title(f"emulated link: d = {dmax:.0e}, alpha = {a.measured_alpha_ms:g} ms, "
                         f"{a.measured_rate_gbit:g} Gbit/s", fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        for ax, gbit in zip(axes[0], rates):
            beta = gbit * 1e9 / 8
            for method, style in (("fp32-allreduce", "k-"), ("allgather", "b-"), ("two-phase", "r-")):
                ax.plot(all_w, [times(w, d, L, alpha, beta)[method] * 1e3 for w in all_w], style, label=method)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("world size W")
            ax.set_ylabel("predicted exchange ms")
            ax.set_title(f"{gbit:g} Gbit/s, d = {d / 1e6:.1f}M, alpha = {a.alpha_us:g} us")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(a.png)), exist_ok=True)
        fig.savefig(a.png, dpi=120)
        print(f"wrote {a.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
