// efsign/safetensors.h — trained weights out of efsign in the format the rest of the
// ecosystem reads (Hugging Face safetensors; torch, safetensors.torch.load_file).
//
// File: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {...strings...}, "NAME": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// padded with spaces to a multiple of 8, then every tensor's bytes (little-endian,
// row-major) back to back in the given order; offsets count from the end of the header.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace efsign {

// Writes `tensors` (copied to the CPU, contiguous) to `path` atomically (temp file,
// fsync, rename). dtypes: float32, float64, int64, int32, uint8. InputError naming the
// file and the OS's reason on failure.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace efsign
