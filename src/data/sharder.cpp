#include <fmt/format.h>

#include <numeric>

#include "efsign/data.h"
#include "efsign/error.h"

namespace efsign {

EpochSharder::EpochSharder(int64_t dataset_size, int world, int rank, int64_t batch_per_rank, uint64_t seed)
    : n_(dataset_size), batch_(batch_per_rank), world_(world), rank_(rank), seed_(seed) {
  if (n_ <= 0) throw InputError("data set is empty");
  if (batch_ <= 0) throw UsageError(fmt::format("batch size must be positive (got {})", batch_));
  if (world_ <= 0 || rank_ < 0 || rank_ >= world_) throw Error("EpochSharder: bad rank/world");
  const int64_t global = batch_ * world_;
  steps_ = (n_ + global - 1) / global;
}

std::vector<int64_t> EpochSharder::permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  SplitMix64 rng(seed * 0x100000001b3ull + static_cast<uint64_t>(epoch) + 1);
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[static_cast<int64_t>(rng.below(i + 1))]);
  return p;
}

std::vector<int64_t> EpochSharder::batch(int64_t epoch, int64_t step) {
  if (step < 0 || step >= steps_) throw Error(fmt::format("step {} outside epoch of {} steps", step, steps_));
  if (epoch != cached_epoch_) {
    perm_ = permutation(n_, seed_, epoch);
    cached_epoch_ = epoch;
  }
  const int64_t begin = step * batch_ * world_;
  const int64_t g = std::min<int64_t>(batch_ * world_, n_ - begin);
  const int64_t avail = std::max<int64_t>(g, world_);  // topped up from perm_[0..] if g < W
  const int64_t lo = avail * rank_ / world_, hi = avail * (rank_ + 1) / world_;
  std::vector<int64_t> out;
  out.reserve(hi - lo);
  for (int64_t k = lo; k < hi; ++k) out.push_back(k < g ? perm_[begin + k] : perm_[(k - g) % n_]);
  return out;
}

}  // namespace efsign
