#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "efsign/data.h"
#include "efsign/error.h"

namespace efsign {

DataSplit make_synthetic(int64_t train_size, int64_t test_size, int64_t channels, int64_t height, int64_t width,
                         int64_t num_classes, uint64_t seed) {
  if (train_size <= 0 || test_size <= 0 || num_classes < 2)
    throw UsageError("synthetic data needs positive sizes and at least 2 classes");
  const int64_t pixels = channels * height * width;
  SplitMix64 rng(seed ^ 0x5eed5eed5eedull);
  std::vector<float> protos(num_classes * pixels);
  for (auto& v : protos) v = static_cast<float>(rng.uniform());
  auto gen = [&](int64_t n, const char* name) {
    Dataset d;
    d.name = name;
    d.images = at::empty({n, channels, height, width}, at::TensorOptions().dtype(at::kByte));
    d.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong));
    uint8_t* img = d.images.data_ptr<uint8_t>();
    int64_t* lab = d.labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = static_cast<int64_t>(rng.below(num_classes));
      lab[i] = c;
      for (int64_t k = 0; k < pixels; ++k) {
        const double v = 0.25 * protos[c * pixels + k] + 0.75 * rng.uniform();
        img[i * pixels + k] = static_cast<uint8_t>(std::lround(255.0 * v));
      }
    }
    d.num_classes = num_classes;
    d.mean.assign(channels, 0.5f);
    d.std.assign(channels, 0.25f);
    return d;
  };
  DataSplit s;
  s.train = gen(train_size, "synthetic");
  s.test = gen(test_size, "synthetic");
  return s;
}

at::Tensor normalize_images(const Dataset& data, const at::Tensor& images_u8) {
  at::Tensor x = images_u8.to(at::kFloat).div_(255.0f);
  const int64_t c = data.channels();
  at::Tensor mean = at::from_blob(const_cast<float*>(data.mean.data()), {1, c, 1, 1}, at::kFloat);
  at::Tensor std = at::from_blob(const_cast<float*>(data.std.data()), {1, c, 1, 1}, at::kFloat);
  return x.sub_(mean).div_(std);
}

Batch make_batch(const Dataset& data, Span<const int64_t> indices) {
  const int64_t b = static_cast<int64_t>(indices.size());
  at::Tensor idx = at::from_blob(const_cast<int64_t*>(indices.data()), {b}, at::TensorOptions().dtype(at::kLong));
  return {normalize_images(data, data.images.index_select(0, idx)), data.labels.index_select(0, idx)};
}

}  // namespace efsign
