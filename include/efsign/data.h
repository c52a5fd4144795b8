// efsign/data.h — data sets held in memory as uint8 images, and the per-rank order.
//
// A Dataset is images [N, C, H, W] uint8 + labels [N] int64 + the per-channel
// normalisation constants; make_batch() turns a list of indices into a float batch.
// Readers throw InputError (one line, naming the file) for anything missing,
// truncated or malformed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "efsign/span.h"

namespace efsign {

struct Dataset {
  std::string name;
  at::Tensor images;  // uint8 [N, C, H, W]
  at::Tensor labels;  // int64 [N]
  int64_t num_classes = 10;
  std::vector<float> mean, std;  // per channel, on the [0, 1] scale
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }
};

struct DataSplit {
  Dataset train, test;
};

// IDX file (optionally gzip-compressed; zlib reads both). Returns a uint8 tensor of the
// file's dimensions. `expected_rank` is the number of dimensions the caller needs.
at::Tensor read_idx(const std::string& path, int expected_rank);

// Fashion-MNIST / MNIST layout: train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz),
// t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz) in `dir`.
DataSplit load_fashion_mnist(const std::string& dir);

// CIFAR binary versions, in `dir` or in its usual subfolder (cifar-10-batches-bin/,
// cifar-100-binary/). CIFAR-10: data_batch_1..5.bin (train) and test_batch.bin, records
// of 1 label byte + 3072 pixel bytes (R plane, G plane, B plane; each 32x32 row-major).
// CIFAR-100: train.bin and test.bin, records of 1 coarse + 1 fine label byte + 3072
// pixel bytes; the labels are the 100 fine classes. Any whole number of records is
// accepted (not only the official 10,000 / 50,000). Images uint8 [N, 3, 32, 32],
// mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010).
DataSplit load_cifar10(const std::string& dir);
DataSplit load_cifar100(const std::string& dir);

// Training augmentation on uint8 images [B, C, H, W] (before normalisation): per image,
// a random HxW crop of the image zero-padded by 4 pixels on every side (offsets dy, dx
// uniform in 0..8), then a horizontal flip with probability 1/2. Draws, per image in
// order: dy = below(9), dx = below(9), flip = below(2). Returns a new uint8 tensor;
// deterministic given the generator's state (or the seed).
class SplitMix64;
at::Tensor augment_crop_flip(const at::Tensor& images_u8, SplitMix64& rng);
at::Tensor augment_crop_flip(const at::Tensor& images_u8, uint64_t seed);

// Learnable synthetic images: one random prototype per class plus noise, generated
// from `seed` alone (identical on every rank and platform).
DataSplit make_synthetic(int64_t train_size, int64_t test_size, int64_t channels, int64_t height, int64_t width,
                         int64_t num_classes, uint64_t seed);

struct Batch {
  at::Tensor images;  // float [B, C, H, W], normalised
  at::Tensor labels;  // int64 [B]
};
Batch make_batch(const Dataset& data, Span<const int64_t> indices);
// Float images from uint8 images [B, C, H, W] of `data`'s kind: x / 255, then per channel
// (x - mean) / std.
at::Tensor normalize_images(const Dataset& data, const at::Tensor& images_u8);

// Note [sharding]
//   Each epoch has one permutation of [0, N), seeded by (seed, epoch) and identical on
//   every rank. Step k takes the global slice perm[k*W*B, (k+1)*W*B) and rank r takes
//   the r-th of W contiguous parts of it, so every sample is used exactly once per
//   epoch across ranks. The last slice may be short: it is split into W parts whose
//   sizes differ by at most one; if it has fewer than W samples it is topped up from
//   the start of the permutation so that no rank gets an empty batch. Every rank has
//   the same number of steps, ceil(N / (W*B)).
class EpochSharder {
 public:
  EpochSharder(int64_t dataset_size, int world, int rank, int64_t batch_per_rank, uint64_t seed);
  int64_t steps_per_epoch() const { return steps_; }
  // Indices for this rank at (epoch, step). The permutation is cached per epoch.
  std::vector<int64_t> batch(int64_t epoch, int64_t step);
  static std::vector<int64_t> permutation(int64_t n, uint64_t seed, int64_t epoch);

 private:
  int64_t n_, batch_, steps_;
  int world_, rank_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Deterministic 64-bit generator (SplitMix64): same numbers on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) without modulo bias worth caring about for bound << 2^64.
  uint64_t below(uint64_t bound) { return static_cast<uint64_t>((static_cast<__uint128_t>(next()) * bound) >> 64); }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t s_;
};

}  // namespace efsign
