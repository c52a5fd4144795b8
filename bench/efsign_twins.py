"""efsign_twins.py: PyTorch twins of efsign's data and models, shared by the tools that
compare efsign with PyTorch (bench/ddp_peer.py, test/safetensors_torch.py).

  build_model     mlp, convnet, resnet18: src/models/models.cpp's layers, parameter and
                  buffer names (PyTorch state-dict names), registration order and count
  load_fashion_mnist, make_synthetic, load_cifar10
                  src/data/: the same images, labels and normalisation constants
  normalizer      src/data/dataset.cpp normalize_images (x / 255, then (x - mean) / std,
                  in float32)
  fnv1a_tensors   efsign's param_checksum (FNV-1a 64 over the bytes of the given tensors)

numpy and torch are passed in (not imported here), so that a tool can print its --help
and its own message when Debian's python3-torch is missing.
"""
import gzip
import os
import struct

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530      # src/data/idx_reader.cpp
SYNTH_MEAN, SYNTH_STD = 0.5, 0.25               # src/data/dataset.cpp (make_synthetic)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # src/data/cifar.cpp
FNV_OFFSET, FNV_PRIME = 1469598103934665603, 1099511628211
M64 = (1 << 64) - 1


class UsageError(Exception):
    pass


# ---- Deterministic numbers, as include/efsign/data.h's SplitMix64 -------------------------

def splitmix_outputs(np, seed, start, count):
    """Outputs start .. start+count-1 (0-based) of SplitMix64(seed), as uint64."""
    k = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed & M64) + k * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def below(np, x, bound):
    """SplitMix64::below: (x * bound) >> 64 for bound < 2^32, without 128-bit integers."""
    b = np.asarray(bound, dtype=np.uint64)
    with np.errstate(over="ignore"):
        t = (x >> np.uint64(32)) * b + (((x & np.uint64(0xFFFFFFFF)) * b) >> np.uint64(32))
    return t >> np.uint64(32)


def uniform(np, x):
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


# ---- Data -----------------------------------------------------------------------------

def read_idx(np, path, rank):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != rank:
        raise UsageError(f"{path}: not an IDX file of unsigned bytes with {rank} dimensions")
    dims = struct.unpack(">" + "I" * rank, raw[4:4 + 4 * rank])
    count = int(np.prod(dims))
    if len(raw) != 4 + 4 * rank + count:
        raise UsageError(f"{path}: {len(raw)} bytes, expected {4 + 4 * rank + count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def find_file(d, stem):
    for cand in (os.path.join(d, stem + ".gz"), os.path.join(d, stem)):
        if os.path.exists(cand):
            return cand
    raise UsageError(f"{d}: no {stem}(.gz) here (install the Debian package dataset-fashion-mnist or pass --data-dir)")


def load_fashion_mnist(np, torch, d):
    def load(img, lab):
        x = read_idx(np, find_file(d, img), 3)
        y = read_idx(np, find_file(d, lab), 1)
        if x.shape[0] != y.shape[0]:
            raise UsageError(f"{d}: {x.shape[0]} images but {y.shape[0]} labels")
        return torch.from_numpy(x.copy()).unsqueeze(1).contiguous(), torch.from_numpy(y.astype(np.int64))
    tr = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    te = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tr, te, 10, FASHION_MEAN, FASHION_STD


def make_synthetic(np, torch, n_train, n_test, classes, seed, c=1, h=28, w=28):
    """src/data/dataset.cpp make_synthetic: one SplitMix64 stream: the class prototypes,
    then per image one class draw and one uniform per pixel, train images then test."""
    pixels = c * h * w
    s = (seed ^ 0x5EED5EED5EED) & M64
    protos = uniform(np, splitmix_outputs(np, s, 0, classes * pixels)).astype(np.float32).reshape(classes, pixels)

    def gen(n, first):
        labels = np.empty(n, dtype=np.int64)
        images = np.empty((n, pixels), dtype=np.uint8)
        chunk = 1024
        for i0 in range(0, n, chunk):
            m = min(chunk, n - i0)
            z = splitmix_outputs(np, s, first + i0 * (pixels + 1), m * (pixels + 1)).reshape(m, pixels + 1)
            lab = below(np, z[:, 0], classes).astype(np.int64)
            v = 0.25 * protos[lab].astype(np.float64) + 0.75 * uniform(np, z[:, 1:])
            x = 255.0 * v
            r = np.floor(x)
            images[i0:i0 + m] = (r + (x - r >= 0.5)).astype(np.uint8)   # std::lround, x >= 0
            labels[i0:i0 + m] = lab
        return torch.from_numpy(images.reshape(n, c, h, w)), torch.from_numpy(labels)

    tr = gen(n_train, classes * pixels)
    te = gen(n_test, classes * pixels + n_train * (pixels + 1))
    return tr, te, classes, SYNTH_MEAN, SYNTH_STD


# ---- Models: src/models/models.cpp ---------------------------------------------------------

def build_model(torch, name, c, h, w, classes):
    nn, F = torch.nn, torch.nn.functional

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(c * h * w, 256)
            self.fc2 = nn.Linear(256, 128)
            self.fc3 = nn.Linear(128, classes)

        def forward(self, x):
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc3(F.relu(self.fc2(x)))

    class ConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(c, 16, 5, padding=2)
            self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
            self.fc1 = nn.Linear(32 * (h // 4) * (w // 4), 128)
            self.fc2 = nn.Linear(128, classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = None
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out = out + (x if self.shortcut is None else self.shortcut(x))
            return F.relu(out)

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.in_planes = 64
            self.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.layer1 = self._layer(64, 1)
            self.layer2 = self._layer(128, 2)
            self.layer3 = self._layer(256, 2)
            self.layer4 = self._layer(512, 2)
            self.linear = nn.Linear(512, classes)

        def _layer(self, planes, stride):
            blocks = []
            for st in (stride, 1):
                blocks.append(BasicBlock(self.in_planes, planes, st))
                self.in_planes = planes
            return nn.Sequential(*blocks)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    if name == "convnet" and (h < 4 or w < 4):
        raise UsageError("convnet needs images of at least 4x4 pixels")
    if name == "resnet18" and (h < 8 or w < 8):
        raise UsageError("resnet18 needs images of at least 8x8 pixels")
    return {"mlp": Mlp, "convnet": ConvNet, "resnet18": ResNet18}[name]()


def fnv1a_tensors(tensors):
    h = FNV_OFFSET
    for t in tensors:
        for byte in t.detach().contiguous().numpy().tobytes():
            h = ((h ^ byte) * FNV_PRIME) & M64
    return f"{h:016x}"


def load_cifar10(np, torch, d):
    """src/data/cifar.cpp load_cifar10: data_batch_1..5.bin then test_batch.bin, each record a
    label byte and 3072 pixel bytes (CHW), in d or d/cifar-10-batches-bin."""
    if not os.path.exists(os.path.join(d, "data_batch_1.bin")):
        d = os.path.join(d, "cifar-10-batches-bin")

    def load(names):
        raw = b"".join(open(os.path.join(d, n), "rb").read() for n in names)
        if len(raw) % 3073:
            raise UsageError(f"{d}: {names}: not a whole number of 3073-byte CIFAR-10 records")
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
        return (torch.from_numpy(rec[:, 1:].copy()).reshape(-1, 3, 32, 32),
                torch.from_numpy(rec[:, 0].astype(np.int64)))
    tr = load([f"data_batch_{i}.bin" for i in range(1, 6)])
    te = load(["test_batch.bin"])
    return tr, te, 10, CIFAR10_MEAN, CIFAR10_STD


def normalizer(torch, c, mean, std):
    """src/data/dataset.cpp normalize_images for c channels; mean and std: one float or c."""
    def per_channel(v):
        return torch.tensor(list(v) if isinstance(v, (tuple, list)) else [v] * c, dtype=torch.float32).view(1, c, 1, 1)
    mean_t, std_t = per_channel(mean), per_channel(std)

    def normalize(u8):
        return u8.to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)
    return normalize
