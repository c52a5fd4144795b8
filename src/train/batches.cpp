#include <ATen/ATen.h>

#include "train_internal.h"

namespace efsign::detail {

BatchSource::BatchSource(const Dataset& train, int world, int rank, int64_t batch_per_rank, uint64_t seed,
                         bool augment, at::Device device)
    : train_(train), sharder_(train.size(), world, rank, batch_per_rank, seed), seed_(seed), rank_(rank),
      augment_(augment), device_(device) {}

Batch BatchSource::get(int64_t epoch, int64_t step) {
  const std::vector<int64_t> idx = sharder_.batch(epoch - 1, step);
  at::Tensor ix = at::from_blob(const_cast<int64_t*>(idx.data()), {static_cast<int64_t>(idx.size())},
                                at::TensorOptions().dtype(at::kLong));
  at::Tensor u8 = train_.images.index_select(0, ix);
  if (augment_)  // a seed per (run, epoch, step, rank): reproducible and different everywhere
    u8 = augment_crop_flip(u8, SplitMix64(seed_ ^ (static_cast<uint64_t>(epoch) << 40) ^
                                          (static_cast<uint64_t>(step) << 16) ^ static_cast<uint64_t>(rank_))
                                   .next());
  return {normalize_images(train_, u8).to(device_), train_.labels.index_select(0, ix).to(device_)};
}

}  // namespace efsign::detail
