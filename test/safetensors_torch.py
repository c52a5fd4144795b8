#!/usr/bin/python3
"""safetensors_torch.py: a file written by efsign-train --save-model, loaded into PyTorch.

Reads FILE with test/safetensors_check.py's reader (json + struct; no safetensors library),
loads it into the PyTorch twin of the model (bench/efsign_twins.py, the twins
bench/ddp_peer.py trains) with load_state_dict(strict=True), and checks:
  - the file holds exactly the names of the twin's state_dict(), each in the twin's dtype
    (load_state_dict alone would let a missing num_batches_tracked and a wrong dtype pass);
  - the load succeeds: every shape is the twin's;
  - the twin's parameters then buffers, in its registration order, hold exactly the file's
    bytes in header order (so the twin computes efsign's param_checksum, which
    safetensors_check.py verifies on the file);
  - evaluated as efsign's evaluate() does (src/train/evaluate.cpp: eval mode; rank r of W
    takes test images r, r+W, ... in batches of --eval-batch; cross_entropy summed per batch
    in float, then over batches and ranks in double), on the test set efsign used
    (Fashion-MNIST, efsign's synthetic set or CIFAR-10 files, normalised as efsign does), the
    number of correct predictions equals efsign's (test_acc x N from --metrics) and the test
    loss equals efsign's test_loss.
It also prints, as measurements (not checked), what changes when the batching differs (the
whole test set in one batch) and, for models with BatchNorm, in train mode.

Interpreter: /usr/bin/python3 with Debian's python3-torch. Exit 0 when all pass, 1 otherwise.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import efsign_twins  # noqa: E402
import safetensors_check  # noqa: E402

TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def summary_of(path):
    rec = None
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("event") == "summary":
                rec = r
    if rec is None:
        raise SystemExit(f"{path}: no summary record")
    return rec


def evaluate(torch, model, normalize, x, y, world, eval_batch):
    """src/train/evaluate.cpp for every rank of `world`: (loss sum, correct, n, logits in test order)."""
    F = torch.nn.functional
    loss, correct = 0.0, 0.0
    logits_all = torch.empty(y.shape[0], 0)
    with torch.no_grad():
        rank_sums = []
        for rank in range(world):
            idx = list(range(rank, y.shape[0], world))
            s = [0.0, 0.0]
            for b in range(0, len(idx), eval_batch):
                ix = torch.tensor(idx[b:b + eval_batch], dtype=torch.int64)
                logits = model(normalize(x.index_select(0, ix)))
                if logits_all.shape[1] == 0:
                    logits_all = torch.empty(y.shape[0], logits.shape[1])
                logits_all[ix] = logits
                yy = y.index_select(0, ix)
                s[0] += F.cross_entropy(logits, yy, reduction="sum").item()
                s[1] += logits.argmax(1).eq(yy).sum().item()
            rank_sums.append(s)
        for s in rank_sums:  # the allreduce: W = 2 adds two numbers, in any order the same
            loss += s[0]
            correct += s[1]
    return loss, int(correct), y.shape[0], logits_all


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--model", required=True, choices=["mlp", "convnet", "resnet18"])
    p.add_argument("--dataset", required=True, choices=["fashion-mnist", "synthetic", "cifar10"])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--synthetic-train", type=int, default=8192)
    p.add_argument("--synthetic-test", type=int, default=2048)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--world", type=int, default=2, help="ranks efsign-train ran with")
    p.add_argument("--eval-batch", type=int, default=1000, help="efsign's TrainOptions::eval_batch")
    p.add_argument("--metrics", required=True, help="efsign-train's --metrics-out file")
    a = p.parse_args(argv)
    import numpy as np
    import torch
    torch.set_num_threads(1)  # efsign-train --threads 1 (its default)
    r = safetensors_check.Report()
    summary = summary_of(a.metrics)

    with open(a.file, "rb") as f:
        meta, tensors, buffer = safetensors_check.parse(f.read())
    state = {}
    for name, dtype, shape, b, e in tensors:
        dt = getattr(torch, TORCH_DTYPES[dtype])
        t = torch.frombuffer(bytearray(buffer[b:e]), dtype=dt) if e > b else torch.empty(0, dtype=dt)
        state[name] = t.reshape(shape)

    if a.dataset == "fashion-mnist":
        (_, _), (x, y), classes, mean, std = efsign_twins.load_fashion_mnist(np, torch, a.data_dir)
    elif a.dataset == "synthetic":
        (_, _), (x, y), classes, mean, std = efsign_twins.make_synthetic(np, torch, a.synthetic_train,
                                                                         a.synthetic_test, 10, a.seed)
    else:
        (_, _), (x, y), classes, mean, std = efsign_twins.load_cifar10(np, torch, a.data_dir)
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    normalize = efsign_twins.normalizer(torch, c, mean, std)
    model = efsign_twins.build_model(torch, a.model, c, h, w, classes)
    want = model.state_dict()

    # strict=True alone is not enough: PyTorch's BatchNorm fills in a missing
    # num_batches_tracked when the state dict carries no version (a plain dict has none), and
    # load_state_dict casts a tensor of another dtype silently. Hence the two checks before it.
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    r.check(f"{a.model}: the file holds exactly the twin's {len(want)} state_dict() names",
            not missing and not unexpected, f"missing {missing[:6]}, unexpected {unexpected[:6]}")
    bad = [f"{k}: file {state[k].dtype}, twin {v.dtype}" for k, v in want.items()
           if k in state and state[k].dtype != v.dtype]
    r.check(f"{a.model}: every dtype is the twin's", not bad, "; ".join(bad[:6]))
    try:
        model.load_state_dict(state, strict=True)
        r.check(f"{a.model}: load_state_dict(strict=True) takes the file ({len(state)} tensors)", True)
    except RuntimeError as e:
        r.check(f"{a.model}: load_state_dict(strict=True) takes the file", False, str(e).replace("\n", " ")[:600])
        print(f"{r.passed} passed, {r.failed} failed")
        return 1
    twin = list(model.parameters()) + list(model.buffers())
    twin_bytes = b"".join(t.detach().contiguous().numpy().tobytes() for t in twin)
    file_bytes = b"".join(buffer[b:e] for _, _, _, b, e in tensors)
    r.check(f"{a.model}: the twin's parameters then buffers hold the file's {len(file_bytes)} bytes in order",
            twin_bytes == file_bytes)
    if len(twin_bytes) <= 4 << 20:  # pure Python FNV-1a: ~3 MB/s
        fnv = efsign_twins.fnv1a_tensors(twin)
        r.check(f"{a.model}: the twin's FNV-1a = efsign's param_checksum {summary['param_checksum']}",
                fnv == summary["param_checksum"], fnv)

    model.eval()
    loss, correct, n, logits = evaluate(torch, model, normalize, x, y, a.world, a.eval_batch)
    efsign_correct = round(summary["test_acc"] * n)
    spread = int((torch.bincount(logits.argmax(1), minlength=classes) > 0).sum())
    print(f"     efsign-train: test acc {summary['test_acc']!r} = {efsign_correct}/{n} correct, "
          f"test loss {summary['test_loss']!r}")
    print(f"     PyTorch twin: test acc {correct / n!r} = {correct}/{n} correct, test loss {loss / n!r} "
          f"(difference {loss / n - summary['test_loss']:.3g}); predictions spread over {spread} classes")
    r.check(f"{a.model}: the twin gets efsign's {efsign_correct}/{n} correct predictions", correct == efsign_correct,
            f"{correct}/{n}")
    r.check(f"{a.model}: the twin's test loss is efsign's to the bit ({summary['test_loss']!r})",
            loss / n == summary["test_loss"], f"{loss / n!r}")
    r.check(f"{a.model}: metadata test_acc = efsign's", float(meta["test_acc"]) == summary["test_acc"],
            meta["test_acc"])

    # Measurements: how much the batching and BatchNorm's mode move the result.
    with torch.no_grad():
        whole = model(normalize(x))
        moved = (whole - logits).abs().max().item()
        flips = int((whole.argmax(1) != logits.argmax(1)).sum())
        print(f"     measured: the whole test set in one batch moves the logits by up to {moved:.3g} "
              f"({flips} predictions change, {int(whole.argmax(1).eq(y).sum())}/{n} correct)")
        if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
            model.train()
            tr = sum(int(model(normalize(x[i:i + a.eval_batch])).argmax(1).eq(y[i:i + a.eval_batch]).sum())
                     for i in range(0, n, a.eval_batch))
            model.load_state_dict(state)  # train mode moved the running statistics
            print(f"     measured: in train mode (BatchNorm on batch statistics) {tr}/{n} correct")
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
