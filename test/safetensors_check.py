#!/usr/bin/env python3
"""safetensors_check.py: reads a safetensors file written by efsign-train --save-model (or
by test/safetensors_edge) with nothing but json and struct, following the format's
specification (https://github.com/huggingface/safetensors, README "Format"), not efsign's
writer:

  8 bytes       N, the header's length, unsigned 64-bit little-endian (at most 100 MB)
  N bytes       a UTF-8 JSON object, starting with "{", optionally padded with spaces:
                {"__metadata__": {str: str}, NAME: {"dtype": D, "shape": [..],
                 "data_offsets": [BEGIN, END]}, ...}; no duplicate keys
  the rest      the byte buffer; offsets count from its start; every byte belongs to
                exactly one tensor (no gaps, no overlaps); END - BEGIN = numel x dtype size;
                little-endian, row-major

and efsign's own promises on top (include/efsign/safetensors.h): the header is padded to
a multiple of 8 and every tensor starts at a file offset that is a multiple of its element
size (what the reference serializer guarantees and zero-copy readers rely on).

Then, with --expect MODEL, the content: exactly the tensors PyTorch's state_dict() of that
model has (names, dtypes, shapes, written out here from PyTorch's module definitions), in
efsign's checksum order (every parameter, then every buffer, in registration order); the
FNV-1a 64 of their bytes in that order equals --checksum (what efsign-train printed) and
the metadata's param_checksum; metadata test_acc equals --test-acc. --expect edge checks
the values test/safetensors_edge wrote.

--selftest: the reader's negative controls. Mutated copies of FILE (a renamed tensor, a
dropped buffer, a wrong dtype string, a wrong shape, a gap, an overlap, an unpadded header,
a flipped data byte, a duplicate key, trailing garbage) must each be rejected for the
reason planted.

Prints one "ok"/"FAIL" line per check; exit 0 when all pass, 1 otherwise, 2 on bad usage.
"""
import argparse
import json
import struct
import sys

MAX_HEADER = 100_000_000
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
FNV_OFFSET, FNV_PRIME, M64 = 1469598103934665603, 1099511628211, (1 << 64) - 1


class FormatError(Exception):
    pass


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise FormatError(f"duplicate key {k!r} in the header")
        d[k] = v
    return d


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def parse(blob, efsign_promises=True):
    """Validates `blob` (the whole file) against the format; returns (metadata, tensors, buffer)
    with tensors a list of (name, dtype, shape, begin, end) in header order. FormatError
    names the first violation."""
    if len(blob) < 8:
        raise FormatError(f"{len(blob)} bytes: too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER:
        raise FormatError(f"header length {n} exceeds the format's limit of {MAX_HEADER}")
    if 8 + n > len(blob):
        raise FormatError(f"header length {n} runs past the end of the {len(blob)}-byte file")
    raw = blob[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"header is not UTF-8: {e}") from None
    if not text.startswith("{"):
        raise FormatError("header does not start with '{'")
    try:
        header, end = json.JSONDecoder(object_pairs_hook=_no_duplicates).raw_decode(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"header is not JSON: {e}") from None
    if text[end:].strip(" "):
        raise FormatError(f"header has {len(text) - end} bytes after the JSON object that are not spaces")
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError("__metadata__ is not an object of strings")
    buffer = blob[8 + n:]
    tensors = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{name}: entry must have exactly dtype, shape and data_offsets (has {info!r})")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise FormatError(f"{name}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise FormatError(f"{name}: shape {shape!r} is not a list of non-negative integers")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise FormatError(f"{name}: data_offsets {offs!r} is not [begin, end] with 0 <= begin <= end")
        numel = 1
        for d in shape:
            numel *= d
        if offs[1] - offs[0] != numel * DTYPE_SIZES[dtype]:
            raise FormatError(f"{name}: data_offsets {offs} hold {offs[1] - offs[0]} bytes but {dtype} {shape} "
                              f"needs {numel * DTYPE_SIZES[dtype]}")
        tensors.append((name, dtype, shape, offs[0], offs[1]))
    pos = 0
    for name, _, _, b, e in sorted(tensors, key=lambda t: (t[3], t[4])):
        if b != pos:
            raise FormatError(f"{name}: starts at {b} but the previous tensor ends at {pos} "
                              f"({'a gap' if b > pos else 'an overlap'})")
        pos = e
    if pos != len(buffer):
        raise FormatError(f"the tensors cover {pos} bytes of the {len(buffer)}-byte buffer")
    if efsign_promises:
        if n % 8:
            raise FormatError(f"header length {n} is not a multiple of 8 (efsign pads it)")
        for name, dtype, _, b, _ in tensors:
            if (8 + n + b) % DTYPE_SIZES[dtype]:
                raise FormatError(f"{name}: {dtype} data at file offset {8 + n + b}, not aligned to its "
                                  f"{DTYPE_SIZES[dtype]}-byte elements")
    return metadata, tensors, buffer


def fnv1a(chunks):
    h = FNV_OFFSET
    for c in chunks:
        for byte in c:
            h = ((h ^ byte) * FNV_PRIME) & M64
    return f"{h:016x}"


# ---- What PyTorch's state_dict() holds, from PyTorch's module definitions -----------------
# Each: (parameters, buffers), lists of (name, dtype, shape) in registration order.

def _linear(p, name, n_in, n_out):
    p += [(f"{name}.weight", "F32", [n_out, n_in]), (f"{name}.bias", "F32", [n_out])]


def _bn(p, b, name, c):  # torch.nn.BatchNorm2d: weight, bias; running_mean, running_var, num_batches_tracked
    p += [(f"{name}.weight", "F32", [c]), (f"{name}.bias", "F32", [c])]
    b += [(f"{name}.running_mean", "F32", [c]), (f"{name}.running_var", "F32", [c]),
          (f"{name}.num_batches_tracked", "I64", [])]


def expected_state(model, c, h, w, classes):
    p, b = [], []
    if model == "mlp":
        _linear(p, "fc1", c * h * w, 256)
        _linear(p, "fc2", 256, 128)
        _linear(p, "fc3", 128, classes)
    elif model == "convnet":
        p += [("conv1.weight", "F32", [16, c, 5, 5]), ("conv1.bias", "F32", [16]),
              ("conv2.weight", "F32", [32, 16, 5, 5]), ("conv2.bias", "F32", [32])]
        _linear(p, "fc1", 32 * (h // 4) * (w // 4), 128)
        _linear(p, "fc2", 128, classes)
    elif model == "resnet18":  # kuangliu/pytorch-cifar models/resnet.py, ResNet(BasicBlock, [2, 2, 2, 2])
        p.append(("conv1.weight", "F32", [64, c, 3, 3]))
        _bn(p, b, "bn1", 64)
        cin = 64
        for layer, planes, stride in ((1, 64, 1), (2, 128, 2), (3, 256, 2), (4, 512, 2)):
            for k, st in enumerate((stride, 1)):
                m = f"layer{layer}.{k}"
                p.append((f"{m}.conv1.weight", "F32", [planes, cin, 3, 3]))
                _bn(p, b, f"{m}.bn1", planes)
                p.append((f"{m}.conv2.weight", "F32", [planes, planes, 3, 3]))
                _bn(p, b, f"{m}.bn2", planes)
                if st != 1 or cin != planes:
                    p.append((f"{m}.shortcut.0.weight", "F32", [planes, cin, 1, 1]))
                    _bn(p, b, f"{m}.shortcut.1", planes)
                cin = planes
        _linear(p, "linear", 512, classes)
    else:
        raise ValueError(model)
    return p, b


# The file test/safetensors_edge writes: (name, dtype, shape, struct format of the values, values).
EDGE_NAME = 'we"ird\\name\t\x01\u00e9'
EDGE = [
    ("odd", "F32", [3], "<3f", (1.5, -2.0, 3.0)),
    ("scalar", "I64", [], "<q", (7,)),
    ("empty", "F32", [0, 4], "", ()),
    ("transposed", "F32", [3, 2], "<6f", (0.0, 3.0, 1.0, 4.0, 2.0, 5.0)),
    ("f64", "F64", [2, 1], "<2d", (0.1, -1e300)),
    ("i32", "I32", [3], "<3i", (-1, 0, 2147483647)),
    ("u8", "U8", [5], "<5B", (0, 1, 127, 128, 255)),
    ("i8", "I8", [2], "<2b", (-128, 127)),
    ("i16", "I16", [2], "<2h", (-32768, 32767)),
    ("f16", "F16", [3], "<3e", (1.0, -0.5, 65504.0)),
    ("bf16", "BF16", [2], "<2H", (0x3F80, 0xC000)),  # 1.0 and -2.0: the top halves of their F32 bits
    ("bool", "BOOL", [3], "<3?", (True, False, True)),
    (EDGE_NAME, "F32", [1], "<f", (42.0,)),
    ("layer.0.weight", "F32", [2, 2], "<4f", (1.0, 2.0, 3.0, 4.0)),
]
EDGE_METADATA = {"quote": 'a"b', "backslash": "c\\d", "newline": "e\nf", "control": "\x01\x1f",
                 "utf8": "\u00e9\u20ac", "empty": ""}


# ---- Checks ---------------------------------------------------------------------------------

class Report:
    def __init__(self, quiet=False, record=False):
        self.failed, self.passed, self.quiet, self.record, self.failures = 0, 0, quiet, record, []

    def check(self, what, cond, detail=""):
        if cond:
            self.passed += 1
            if not self.quiet:
                print(f"ok   {what}")
        else:
            self.failed += 1
            line = what + (f": {detail}" if detail else "")
            if self.record:
                self.failures.append(line)
            else:
                print(f"FAIL {line}")
        return cond


def check_model(r, meta, tensors, buffer, a):
    c, h, w = a.in_shape
    params, bufs = expected_state(a.expect, c, h, w, a.classes)
    want = params + bufs
    got = [(n, d, s) for n, d, s, _, _ in tensors]
    have, need = {t[0] for t in got}, {t[0] for t in want}
    r.check(f"{a.expect}: {len(want)} tensors ({len(params)} parameters, {len(bufs)} buffers) under "
            f"PyTorch's state-dict names", have == need,
            f"missing {sorted(need - have)[:8]}, unexpected {sorted(have - need)[:8]}")
    wmap = {n: (d, s) for n, d, s in want}
    bad = [f"{n}: {d} {s} (PyTorch: {wmap[n][0]} {wmap[n][1]})" for n, d, s in got if n in wmap and (d, s) != wmap[n]]
    r.check(f"{a.expect}: every dtype and shape is PyTorch's", not bad, "; ".join(bad[:8]))
    first = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
    r.check(f"{a.expect}: header order is parameters then buffers, in registration order", got == want,
            f"first difference at entry {first}")
    total = sum(e - b for _, _, _, b, e in tensors)
    r.check(f"{a.expect}: the byte buffer is exactly the tensors' {total} bytes", total == len(buffer))
    fnv = fnv1a(buffer[b:e] for _, _, _, b, e in tensors)
    if a.checksum:
        r.check(f"{a.expect}: FNV-1a of the tensors in header order = the checksum efsign printed ({a.checksum})",
                fnv == a.checksum, f"got {fnv}")
    r.check(f"{a.expect}: metadata param_checksum = the tensors' FNV-1a ({fnv})",
            meta.get("param_checksum") == fnv, f"metadata says {meta.get('param_checksum')!r}")
    if a.test_acc is not None:
        r.check(f"{a.expect}: metadata test_acc = the reported {a.test_acc!r}",
                meta.get("test_acc") is not None and float(meta["test_acc"]) == a.test_acc,
                f"metadata says {meta.get('test_acc')!r}")
    r.check(f"{a.expect}: metadata format pt, producer efsign-train, model {a.expect}",
            meta.get("format") == "pt" and meta.get("producer") == "efsign-train" and meta.get("model") == a.expect,
            f"{meta!r}")


def check_edge(r, meta, tensors, buffer):
    got = {n: (d, s, buffer[b:e]) for n, d, s, b, e in tensors}
    r.check("edge: the tensors written, no more", set(got) == {t[0] for t in EDGE},
            f"{sorted(got)} vs {sorted(t[0] for t in EDGE)}")
    for name, dtype, shape, fmt, values in EDGE:
        if name not in got:
            continue
        d, s, data = got[name]
        ok = d == dtype and s == shape and len(data) == struct.calcsize(fmt) and struct.unpack(fmt, data) == values
        r.check(f"edge: {name!r} is {dtype} {shape} = {values}", ok,
                f"{d} {s} {struct.unpack(fmt, data) if len(data) == struct.calcsize(fmt) else data.hex()}")
    r.check("edge: metadata strings round-trip (quotes, backslash, newline, control bytes, UTF-8, empty)",
            meta == EDGE_METADATA, f"{meta!r}")
    r.check("edge: header order is the order written", [t[0] for t in tensors] == [t[0] for t in EDGE],
            f"{[t[0] for t in tensors]}")


# ---- Negative controls: the reader must reject each planted fault --------------------------

def _rebuild(meta, entries, buffer, pad=True):
    """A file from metadata, header entries (name -> dict, in order) and a buffer."""
    head = {"__metadata__": meta}
    head.update(entries)
    text = json.dumps(head, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + buffer


def _without(entries, buffer, name):
    """entries and buffer with tensor `name` and its bytes taken out."""
    b0, e0 = entries[name]["data_offsets"]
    out = {}
    for k, v in entries.items():
        if k != name:
            b, e = v["data_offsets"]
            shift = e0 - b0 if b >= e0 else 0
            out[k] = dict(v, data_offsets=[b - shift, e - shift])
    return out, buffer[:b0] + buffer[e0:]


def selftest(r, blob, a):
    """Each mutant must fail a check whose message contains the planted reason."""
    meta, tensors, buffer = parse(blob)
    entries = {n: {"dtype": d, "shape": s, "data_offsets": [b, e]} for n, d, s, b, e in tensors}
    by_begin = [t for t in sorted(tensors, key=lambda t: t[3]) if t[4] > t[3]]
    name0, dtype0, shape0 = tensors[0][:3]
    victim = next((t[0] for t in tensors if t[1] == "I64"), tensors[-1][0])  # a buffer if there is one
    mutants = []

    def mutant(what, reason, data):
        mutants.append((what, reason, data))

    def edit(name, **kw):
        e = dict(entries)
        e[name] = dict(entries[name], **kw)
        return e

    names = "state-dict names" if a.expect != "edge" else "tensors written"
    mutant(f"a renamed tensor ({name0} -> {name0}s)", names,
           _rebuild(meta, {(k + "s" if k == name0 else k): v for k, v in entries.items()}, buffer))
    mutant(f"a dropped tensor ({victim})", names, _rebuild(meta, *_without(entries, buffer, victim)))
    swap = {"F32": "I32", "I32": "F32", "I64": "F64", "F64": "I64", "U8": "I8", "I8": "U8"}
    vt = entries[victim]["dtype"]
    mutant(f"a wrong dtype string ({victim} as {swap.get(vt, 'F32')}, same size)",
           "dtype and shape" if a.expect != "edge" else f"{victim!r} is",
           _rebuild(meta, edit(victim, dtype=swap.get(vt, "F32")), buffer))
    if shape0:
        mutant(f"{name0} with a shape of another size", "hold",
               _rebuild(meta, edit(name0, shape=[shape0[0] + 1] + shape0[1:]), buffer))
    if len(shape0) >= 2 and shape0[0] != shape0[1]:
        mutant(f"{name0} with its first two dimensions swapped (same size)", "dtype and shape",
               _rebuild(meta, edit(name0, shape=[shape0[1], shape0[0]] + shape0[2:]), buffer))
    shifted = {k: dict(v, data_offsets=[v["data_offsets"][0] + 8, v["data_offsets"][1] + 8])
               for k, v in entries.items()}
    mutant("a gap of 8 bytes before the first tensor", "a gap", _rebuild(meta, shifted, bytes(8) + buffer))
    prev, nxt = next((p, q) for p, q in zip(by_begin, by_begin[1:]) if p[4] - p[3] >= 8)
    mutant(f"{nxt[0]} overlapping {prev[0]} by 8 bytes (and 8 bytes unclaimed)", "overlap",
           _rebuild(meta, edit(nxt[0], data_offsets=[nxt[3] - 8, nxt[4] - 8]), buffer))
    mutant("8 bytes of trailing garbage", "cover", blob + bytes(8))
    unpadded = _rebuild(meta, entries, buffer, pad=False)
    if struct.unpack("<Q", unpadded[:8])[0] % 8 == 0:
        unpadded = _rebuild(dict(meta, pad="x"), entries, buffer, pad=False)  # 10 more bytes
    mutant("an unpadded header", "multiple of 8", unpadded)
    flip = bytearray(buffer)
    flip[by_begin[-1][3]] ^= 1
    flipped = by_begin[-1][0]
    mutant(f"one flipped bit in {flipped}", "checksum" if a.expect != "edge" else f"{flipped!r} is",
           _rebuild(meta, entries, bytes(flip)))
    raw = blob[8:8 + struct.unpack("<Q", blob[:8])[0]].decode().rstrip(" ")
    dup = (raw[:-1] + "," + json.dumps(name0) + ":" + json.dumps(entries[name0]) + "}").encode()
    dup += b" " * (-len(dup) % 8)
    mutant("a duplicate key", "duplicate key", struct.pack("<Q", len(dup)) + dup + buffer)
    mutant("a header length past the end of the file", "past the end", struct.pack("<Q", len(blob)) + blob[8:])
    lead = b" " + blob[8:8 + struct.unpack("<Q", blob[:8])[0]].rstrip(b" ")
    lead += b" " * (-len(lead) % 8)
    mutant("a header starting with a space", "start with", struct.pack("<Q", len(lead)) + lead + buffer)
    for what, reason, data in mutants:
        inner = Report(quiet=True, record=True)
        try:
            m, t, b = parse(data)
            if a.expect == "edge":
                check_edge(inner, m, t, b)
            else:
                check_model(inner, m, t, b, a)
        except FormatError as e:
            inner.failures.append(str(e))
        hit = [f for f in inner.failures if reason in f]
        r.check(f"selftest: rejects {what} ({hit[0] if hit else '-'})", bool(hit),
                f"wanted a failure mentioning {reason!r}, got {inner.failures[:3]}")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--expect", choices=["mlp", "convnet", "resnet18", "edge"], required=True)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--in-shape", default="1,28,28", help="C,H,W of the model's input")
    p.add_argument("--checksum", default="", help="the param_checksum efsign-train reported")
    p.add_argument("--test-acc", type=float, default=None, help="the test_acc efsign-train reported")
    p.add_argument("--selftest", action="store_true", help="also check that planted faults are rejected")
    a = p.parse_args(argv)
    a.in_shape = tuple(int(x) for x in a.in_shape.split(","))
    with open(a.file, "rb") as f:
        blob = f.read()
    r = Report()
    try:
        meta, tensors, buffer = parse(blob)
        r.check(f"{a.file}: a valid safetensors file ({len(tensors)} tensors, {len(buffer)} data bytes, header "
                f"padded to 8, every tensor aligned)", True)
    except FormatError as e:
        r.check(f"{a.file}: a valid safetensors file", False, str(e))
        return 1
    if a.expect == "edge":
        check_edge(r, meta, tensors, buffer)
    else:
        check_model(r, meta, tensors, buffer, a)
    if a.selftest:
        selftest(r, blob, a)
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
