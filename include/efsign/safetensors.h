// efsign/safetensors.h — trained weights out of efsign in the format the rest of the
// ecosystem reads (Hugging Face safetensors; torch, safetensors.torch.load_file).
//
// File: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {...strings...}, "NAME": {"dtype": "F32", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// padded with spaces to a multiple of 8, then every tensor's bytes (little-endian,
// row-major) back to back; offsets count from the end of the header. The header lists the
// tensors in the given order; their bytes are grouped by decreasing element size (in the
// given order within a size), so every tensor is aligned to its element size (Note
// [safetensors data order] in src/train/safetensors.cpp).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace efsign {

// Writes `tensors` (copied to the CPU, contiguous) to `path` atomically (PATH.tmp, fsync,
// rename; a failure removes the .tmp and leaves an existing file as it was). dtypes:
// float64/32/16, bfloat16, int64/32/16/8, uint8, bool. InputError naming the file and the
// OS's reason when the file cannot be written; Error, before any file is touched, for an
// unsupported dtype, a name given twice or a tensor called "__metadata__" (the format has
// no room for them). test/cli_save_model.sh reads the result back.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace efsign
