#!/usr/bin/python3
"""ddp_peer.py: the PyTorch DDP peer of efsign-train (bench/PEER.md).

A twin of efsign's models (mlp, convnet, resnet18: the same layers, parameter names
and parameter count as src/models/models.cpp), trained on the same data in the same
order (Fashion-MNIST IDX files or efsign's synthetic images, the per-epoch
permutation and per-rank contiguous split of Note [sharding] in
include/efsign/data.h, the same normalisation), with the same per-rank batch, one
intra-op thread per rank and torch.optim.SGD with momentum (efsign's sgdm rule), on
the gloo backend, with one of:

  --hook none       plain DDP: fp32 allreduce of 25 MiB buckets during backward
  --hook allreduce  the same through PyTorch's reference Python hook (a check of the
                    byte count of `none`)
  --hook fp16       DDP + fp16_compress_hook
  --hook powersgd   DDP + powerSGD_hook (--powersgd-rank R, error feedback and warm
                    start on, compression from iteration --powersgd-start-iter)
  --hook compute    no DDP, no exchange: each rank trains its own replica (the
                    compute-only floor of this peer, under the same launch)

PowerSGD on gloo: PyTorch 1.13's hook issues its second and third allreduce (P, then
Q) from future callbacks; with more than one DDP bucket their order can differ between
ranks, and gloo then matches the wrong tensors and aborts (seen at W = 4, ResNet-18:
"enforce fail at gloo/transport/tcp/pair.cc:510 op.preamble.length <= op.nbytes").
By default (--powersgd-order serial) every allreduce the hook issues is waited for
before the hook goes on, so all ranks issue them in the same order; this costs the
hook its overlap with backward. --powersgd-order async runs PyTorch's hook unchanged.

Launch it under mpirun like efsign-train (rank and size from OMPI_COMM_WORLD_RANK /
OMPI_COMM_WORLD_SIZE, else RANK / WORLD_SIZE, else one process); the gloo rendezvous
is MASTER_ADDR:MASTER_PORT (default 127.0.0.1:29500), GLOO_SOCKET_IFNAME picks the
interface (bench/netem.sh sets all three on its emulated hosts):

  mpirun -np 2 /usr/bin/python3 bench/ddp_peer.py --model convnet --epochs 3 \\
      --steps-per-epoch 50 --hook fp16 --metrics-out runs/ddp_fp16.jsonl

Interpreter: /usr/bin/python3 with Debian's python3-torch (PyTorch 1.13, CPU, gloo;
`apt-get install python3-torch`). The python3 first on PATH here may be a pyenv
interpreter without torch, hence the shebang. Only bench/ uses Python; the trainer
does not.

Output (rank 0, --metrics-out, JSON Lines): one {"event":"epoch",...} per epoch and a
final {"event":"summary",...}, with efsign-train's field names where they mean the
same thing (README "Metrics fields"), so efsign-report and bench/plot.py read both:
  step_time_ms       wall time of the epoch's (or the run's) training loop / steps, as
                     efsign-train computes it (batch building included)
  step_ms_median     median of the per-step times after warm-up (every epoch after the
                     first; with one epoch, the steps after the first 3)
  bytes_sent_per_step  bytes handed to gloo per rank per step, median over the timed steps
                     (PowerSGD's first --powersgd-start-iter steps are plain fp32
                     allreduces; bytes_sent_mean_per_step is the mean over all steps,
                     as efsign's field is): the tensors passed to dist.all_reduce by the hook (counted
                     by a wrapper around torch.distributed.all_reduce), or, for plain
                     DDP, the reducer's buckets (4 B x every gradient element), plus
                     the buffers DDP broadcasts from rank 0 before every forward
                     (broadcast_buffers=True, DDP's default; ResNet-18's BatchNorm
                     statistics). Not counted: gloo's own headers and TCP.
  wire_bytes_per_step  the same under a ring model (allreduce 2(W-1)/W x n, broadcast
                     (W-1)/W x n), as efsign's wire_bytes_per_step; a model, not a
                     measurement.
"""
import argparse
import datetime
import json
import math
import os
import sys
import time

# The twins of efsign's data and models (the same directory as this script).
from efsign_twins import (M64, UsageError, below, build_model, fnv1a_tensors, load_fashion_mnist,
                          make_synthetic, normalizer, splitmix_outputs)

KNOWN_HOOKS = ("none", "allreduce", "fp16", "powersgd", "compute")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="ddp_peer.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + " See the module docstring (head -40 bench/ddp_peer.py) for details.")
    p.add_argument("--model", default="convnet", choices=["mlp", "convnet", "resnet18"])
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "synthetic"])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--synthetic-train", type=int, default=8192)
    p.add_argument("--synthetic-test", type=int, default=2048)
    p.add_argument("--num-classes", type=int, default=0, help="0: the data set's (10)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps-per-epoch", type=int, default=0, help="cap every epoch at N steps (0: whole epoch)")
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--lr", type=float, default=0.05, help="default: efsign-train's sgdm default")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    p.add_argument("--eval-batch", type=int, default=1000)
    p.add_argument("--hook", default="none", choices=KNOWN_HOOKS)
    p.add_argument("--powersgd-rank", type=int, default=4)
    p.add_argument("--powersgd-start-iter", type=int, default=2,
                   help="PowerSGD runs plain allreduce before this iteration (PyTorch's minimum with error "
                        "feedback is 2; its default, 1000, would measure fp32 allreduce in short runs)")
    p.add_argument("--powersgd-order", choices=["serial", "async"], default="serial",
                   help="serial: wait for every allreduce the PowerSGD hook issues, so all ranks issue them in one "
                        "order (costs the hook its overlap with backward); async: PyTorch's hook unchanged, which "
                        "can fail on gloo with more than one bucket (see the module docstring)")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP's default")
    p.add_argument("--no-broadcast-buffers", action="store_true",
                   help="DDP broadcast_buffers=False; BatchNorm statistics are then averaged at every epoch end "
                        "as efsign does")
    p.add_argument("--expect-params", type=int, default=0,
                   help="fail (exit 2) unless the model has exactly this many parameters (efsign-train --describe)")
    p.add_argument("--checksum", choices=["auto", "on", "off"], default="auto",
                   help="FNV-1a of parameters and buffers at the end, as efsign's param_checksum "
                        "(auto: models up to 4 MB; pure Python, slow for large models)")
    p.add_argument("--label", default="", help="row name in the summary (default ddp-<hook>)")
    p.add_argument("--metrics-out", default="")
    p.add_argument("--timeout-s", type=float, default=600.0, help="gloo collective timeout")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.epochs < 1 or a.steps_per_epoch < 0 or a.threads < 1 or a.eval_batch < 1:
        raise UsageError("need --batch-size >= 1, --epochs >= 1, --steps-per-epoch >= 0, --threads >= 1")
    if a.hook == "powersgd" and (a.powersgd_rank < 1 or a.powersgd_start_iter < 2):
        raise UsageError("--powersgd-rank must be >= 1 and --powersgd-start-iter >= 2")
    if a.synthetic_train < 1 or a.synthetic_test < 1:
        raise UsageError("--synthetic-train/--synthetic-test must be >= 1")
    return a


def permutation(np, n, seed, epoch):
    """EpochSharder::permutation: Fisher-Yates with SplitMix64(seed * 0x100000001b3 + epoch + 1)."""
    draws = below(np, splitmix_outputs(np, (seed * 0x100000001B3 + epoch + 1) & M64, 0, n - 1),
                  np.arange(n, 1, -1, dtype=np.uint64)).astype(np.int64)
    p = list(range(n))
    for k, i in enumerate(range(n - 1, 0, -1)):
        j = int(draws[k])
        p[i], p[j] = p[j], p[i]
    return p


class Sharder:
    """Note [sharding]: step k's global slice perm[k*W*B, (k+1)*W*B), rank r its r-th contiguous part."""

    def __init__(self, np, n, world, rank, batch, seed):
        self.np, self.n, self.world, self.rank, self.batch, self.seed = np, n, world, rank, batch, seed
        self.steps = (n + batch * world - 1) // (batch * world)
        self.epoch, self.perm = -1, None

    def indices(self, epoch, step):
        if epoch != self.epoch:
            self.perm, self.epoch = permutation(self.np, self.n, self.seed, epoch), epoch
        begin = step * self.batch * self.world
        g = min(self.batch * self.world, self.n - begin)
        avail = max(g, self.world)
        lo, hi = avail * self.rank // self.world, avail * (self.rank + 1) // self.world
        return [self.perm[begin + k] if k < g else self.perm[(k - g) % self.n] for k in range(lo, hi)]


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


# ---- Run -------------------------------------------------------------------------------

def world_from_env():
    for r, s in (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("RANK", "WORLD_SIZE")):
        if r in os.environ and s in os.environ:
            return int(os.environ[r]), int(os.environ[s])
    return 0, 1


def main(argv):
    a = parse_args(argv)
    try:
        import numpy as np
        import torch
        import torch.distributed as dist
    except ImportError as e:
        print(f"ddp_peer.py: error: {e}: needs Debian's python3-torch (apt-get install python3-torch), run with "
              f"/usr/bin/python3 (this is {sys.executable})", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    rank, world = world_from_env()
    root = rank == 0
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", "29500"))
    dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=a.timeout_s))

    if a.dataset == "fashion-mnist":
        (xtr, ytr), (xte, yte), classes, mean, std = load_fashion_mnist(np, torch, a.data_dir)
        name = "fashion-mnist"
    else:
        classes = a.num_classes if a.num_classes > 0 else 10
        (xtr, ytr), (xte, yte), classes, mean, std = make_synthetic(np, torch, a.synthetic_train, a.synthetic_test,
                                                                    classes, a.seed)
        name = "synthetic"
    if a.num_classes > 0 and a.num_classes < classes:
        raise UsageError(f"--num-classes {a.num_classes} is less than the {classes} classes of {name}")
    classes = a.num_classes if a.num_classes > 0 else classes
    c, h, w = xtr.shape[1], xtr.shape[2], xtr.shape[3]
    normalize = normalizer(torch, c, mean, std)  # src/data/dataset.cpp normalize_images

    torch.manual_seed(a.seed)
    model = build_model(torch, a.model, c, h, w, classes)
    params = list(model.parameters())
    num_params = sum(p.numel() for p in params)
    if root:
        print(f"ddp_peer: {world} ranks, gloo, PyTorch {torch.__version__}, hook {a.hook}, model {a.model} for "
              f"{c}x{h}x{w} inputs, {classes} classes: {len(params)} layers, {num_params} parameters", flush=True)
    if a.expect_params and num_params != a.expect_params:
        raise UsageError(f"{a.model} has {num_params} parameters here but efsign-train --describe says "
                         f"{a.expect_params}: the twin is not a twin")

    label = a.label or {"none": "ddp-fp32", "allreduce": "ddp-fp32-hook", "fp16": "ddp-fp16",
                        "powersgd": f"ddp-powersgd-r{a.powersgd_rank}", "compute": "ddp-compute"}[a.hook]
    broadcast_buffers = not a.no_broadcast_buffers
    counted = [0]  # bytes handed to dist.all_reduce by a Python hook during the current step
    net = model
    if a.hook != "compute":
        net = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=a.bucket_cap_mb,
                                                        broadcast_buffers=broadcast_buffers)
        if a.hook != "none":
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
            orig_all_reduce = dist.all_reduce

            serial = a.hook == "powersgd" and a.powersgd_order == "serial"

            def counting_all_reduce(tensor, *args, **kwargs):
                counted[0] += tensor.numel() * tensor.element_size()
                work = orig_all_reduce(tensor, *args, **kwargs)
                if serial and work is not None:
                    work.wait()  # its .then() callbacks, and the allreduces they issue, then run in this thread
                return work
            dist.all_reduce = counting_all_reduce   # the hooks call dist.all_reduce at call time
            if a.hook == "allreduce":
                net.register_comm_hook(None, default_hooks.allreduce_hook)
            elif a.hook == "fp16":
                net.register_comm_hook(None, default_hooks.fp16_compress_hook)
            else:
                state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=a.powersgd_rank,
                                                    start_powerSGD_iter=a.powersgd_start_iter,
                                                    use_error_feedback=True, warm_start=True)
                net.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    grad_elems = sum(p.numel() for p in params if p.requires_grad)
    buf_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    bcast_per_step = buf_bytes if (a.hook != "compute" and broadcast_buffers and world > 1 and buf_bytes) else 0
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    sharder = Sharder(np, ytr.shape[0], world, rank, a.batch_size, a.seed)
    steps = min(a.steps_per_epoch, sharder.steps) if a.steps_per_epoch > 0 else sharder.steps
    if root:
        print(f"  data: {name} ({ytr.shape[0]} train, {yte.shape[0]} test), {steps} steps/epoch of {world} x "
              f"{a.batch_size} images", flush=True)
    metrics = open(a.metrics_out, "w") if root and a.metrics_out else None

    def write(rec):
        if metrics:
            metrics.write(json.dumps(rec, separators=(",", ":")) + "\n")
            metrics.flush()

    def allreduce_doubles(vals):
        t = torch.tensor(vals, dtype=torch.float64)
        if world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def evaluate():
        ev = model  # the replica itself: no buffer broadcast in evaluation
        ev.eval()
        sums = [0.0, 0.0, 0.0]
        idx = list(range(rank, yte.shape[0], world))
        with torch.no_grad():
            for b in range(0, len(idx), a.eval_batch):
                ix = torch.tensor(idx[b:b + a.eval_batch], dtype=torch.int64)
                x, y = normalize(xte.index_select(0, ix)), yte.index_select(0, ix)
                logits = ev(x)
                sums[0] += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
                sums[1] += logits.argmax(1).eq(y).sum().item()
                sums[2] += float(len(ix))
        ev.train()
        s = allreduce_doubles(sums)
        return s[0] / s[2], s[1] / s[2]

    def average_buffers():
        if world == 1:
            return
        with torch.no_grad():
            for b in model.buffers():
                if b.is_floating_point():
                    t = b.to(torch.float64)
                    dist.all_reduce(t)
                    b.copy_(t.div_(world).to(b.dtype))

    step_times, bytes_total, total_steps, total_s, total_images = [], 0, 0, 0.0, 0.0
    test_loss = test_acc = float("nan")
    model.train()
    for epoch in range(1, a.epochs + 1):
        sums = [0.0, 0.0, 0.0]  # loss * n, correct, images
        fb_ms = up_ms = 0.0
        ep_bytes = 0
        t0 = time.perf_counter()
        for step in range(steps):
            ts = time.perf_counter()
            counted[0] = 0
            ix = torch.tensor(sharder.indices(epoch - 1, step), dtype=torch.int64)
            x, y = normalize(xtr.index_select(0, ix)), ytr.index_select(0, ix)
            tf = time.perf_counter()
            opt.zero_grad()
            logits = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            loss.backward()      # DDP: returns when every bucket's exchange has finished
            tu = time.perf_counter()
            opt.step()
            te = time.perf_counter()
            n = float(len(ix))
            sums[0] += loss.item() * n
            sums[1] += logits.argmax(1).eq(y).sum().item()
            sums[2] += n
            if a.hook == "none":
                counted[0] = 4 * grad_elems  # the reducer's buckets, every gradient once, in fp32
            elif a.hook == "compute":
                counted[0] = 0
            ep_bytes += counted[0] + bcast_per_step
            fb_ms += (tu - tf) * 1e3
            up_ms += (te - tu) * 1e3
            step_times.append((epoch, step, (time.perf_counter() - ts) * 1e3, counted[0] + bcast_per_step))
        train_s = time.perf_counter() - t0
        agg = allreduce_doubles(sums)
        if not broadcast_buffers or a.hook == "compute":
            average_buffers()
        test_loss, test_acc = evaluate()
        bytes_total += ep_bytes
        total_steps += steps
        total_s += train_s
        total_images += agg[2]
        if root:
            print(f"epoch {epoch:>3}  lr {a.lr:<8.4g} train loss {agg[0] / agg[2]:.4f} acc {100 * agg[1] / agg[2]:6.2f}%"
                  f"  test loss {test_loss:.4f} acc {100 * test_acc:6.2f}%  {agg[2] / train_s:7.0f} img/s  "
                  f"{train_s * 1e3 / steps:6.1f} ms/step  {ep_bytes / steps:.0f} B/step sent", flush=True)
        write({"event": "epoch", "epoch": epoch, "lr": a.lr, "train_loss": agg[0] / agg[2],
               "train_acc": agg[1] / agg[2], "test_loss": test_loss, "test_acc": test_acc,
               "images_per_sec": agg[2] / train_s, "step_time_ms": train_s * 1e3 / steps,
               "fwd_bwd_ms": fb_ms / steps, "update_ms": up_ms / steps, "bytes_sent_per_step": ep_bytes / steps,
               "steps": steps})

    # Timed steps: every epoch after the first; with one epoch, all but the first 3 steps.
    timed_steps = [x for x in step_times if x[0] > 1] if a.epochs > 1 else step_times[3:]
    timed_steps = timed_steps or step_times
    timed = sorted(x[2] for x in timed_steps)
    med = median(timed)
    bytes_per_step = median([x[3] for x in timed_steps])
    allreduce_part = bytes_per_step - bcast_per_step
    wire = 2 * (world - 1) / world * allreduce_part + (world - 1) / world * bcast_per_step
    fp32 = 4 * num_params
    do_sum = a.checksum == "on" or (a.checksum == "auto" and (fp32 + buf_bytes) <= 4 << 20)
    checksum = fnv1a_tensors(list(model.parameters()) + list(model.buffers())) if (do_sum and root) else ""
    exchange = {"none": "allreduce", "allreduce": "allreduce", "fp16": "fp16-allreduce",
                "powersgd": f"powersgd-r{a.powersgd_rank}", "compute": "none"}[a.hook]
    summary = {
        "event": "summary", "world_size": world, "backend": "gloo", "optimizer": label, "exchange": exchange,
        "overlap": a.hook != "compute", "model": a.model, "dataset": name, "epochs": a.epochs,
        "batch_size": a.batch_size, "lr": a.lr, "num_params": num_params, "num_layers": len(params),
        "test_acc": test_acc, "test_loss": test_loss, "bytes_sent_per_step": bytes_per_step,
        "bytes_sent_mean_per_step": bytes_total / total_steps,
        "fp32_bytes_per_step": fp32, "wire_bytes_per_step": wire,
        "fp32_ring_wire_bytes_per_step": 2 * (world - 1) / world * fp32 if world > 1 else 0,
        "compression_ratio": (fp32 / bytes_per_step) if bytes_per_step > 0 else None,
        "step_time_ms": total_s * 1e3 / total_steps, "images_per_sec": total_images / total_s,
        "train_time_s": total_s, "param_checksum": checksum, "global_steps": total_steps, "stopped_early": False,
        # Beyond efsign's fields:
        "label": label, "framework": "pytorch-ddp", "torch_version": torch.__version__, "comm_hook": a.hook,
        "update_rule": "sgdm", "momentum": a.momentum, "weight_decay": a.weight_decay,
        "step_ms_median": med, "step_ms_min": timed[0], "step_ms_max": timed[-1], "steps_timed": len(timed),
        "broadcast_bytes_per_step": bcast_per_step, "bucket_cap_mb": a.bucket_cap_mb,
        "broadcast_buffers": broadcast_buffers and a.hook != "compute", "threads": a.threads,
    }
    if a.hook != "compute":
        try:  # DDP's own record of its buckets (bytes each; a private API, so optional)
            summary["ddp_bucket_sizes"] = str(net._get_ddp_logging_data().get("bucket_sizes", ""))
        except Exception:  # noqa: BLE001 - informational only
            pass
    if a.hook == "powersgd":
        summary["powersgd_order"] = a.powersgd_order
        summary["powersgd_rank"] = a.powersgd_rank
        summary["powersgd_start_iter"] = a.powersgd_start_iter
    write(summary)
    if root:
        print(f"done: test acc {100 * test_acc:.2f}%, {bytes_per_step:.0f} B sent per rank per step "
              f"({fp32 / bytes_per_step if bytes_per_step else float('inf'):.1f}x fewer than fp32), "
              f"{total_s * 1e3 / total_steps:.2f} ms/step (median of {len(timed)} timed steps {med:.2f} ms)"
              + (f", checksum {checksum}" if checksum else ""), flush=True)
    if metrics:
        metrics.close()
    dist.barrier()
    # Leave without the interpreter's teardown: twice under heavy load (W = 4 on 2 CPUs,
    # PowerSGD) every rank printed its summary and then kept one thread spinning until
    # mpirun's timeout. Everything is written; the OS closes gloo's sockets.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as e:
        print(f"ddp_peer.py: error: {e}", file=sys.stderr)
        sys.exit(2)
