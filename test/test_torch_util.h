// Test helpers that need LibTorch: replica comparison across the MPI world.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstring>
#include <vector>

#include "test_util.h"

namespace efsign::test {

// Leaf parameters of the given sizes, standard normal from `seed`, requiring grad.
inline std::vector<at::Tensor> make_params(const std::vector<int64_t>& sizes, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<at::Tensor> ps;
  for (int64_t n : sizes) ps.push_back(torch::randn({n}).requires_grad_(true));
  return ps;
}

// The raw bytes of tensors, concatenated.
inline std::vector<uint8_t> bytes_of(const std::vector<at::Tensor>& ts) {
  std::vector<uint8_t> out;
  for (const auto& t : ts) {
    auto c = t.detach().contiguous();
    const auto* p = static_cast<const uint8_t*>(c.data_ptr());
    out.insert(out.end(), p, p + c.numel() * c.element_size());
  }
  return out;
}

// Collective. True on every rank iff every rank's bytes equal rank 0's.
inline bool same_on_all_ranks(const std::vector<uint8_t>& mine) {
  auto& comm = world();
  std::vector<uint8_t> all(mine.size() * comm.size());
  comm.allgather(Span<const std::byte>(reinterpret_cast<const std::byte*>(mine.data()), mine.size()),
                 Span<std::byte>(reinterpret_cast<std::byte*>(all.data()), all.size()));
  for (int r = 1; r < comm.size(); ++r)
    if (std::memcmp(all.data(), all.data() + r * mine.size(), mine.size()) != 0) return false;
  return true;
}

}  // namespace efsign::test
