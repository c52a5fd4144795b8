#include "efsign/layer_table.h"

#include <fmt/format.h>

#include "efsign/checksum.h"
#include "efsign/error.h"

namespace efsign {

LayerTable::LayerTable(std::vector<int64_t> sizes) : sizes_(std::move(sizes)) {
  elem_offsets_.reserve(sizes_.size() + 1);
  word_offsets_.reserve(sizes_.size() + 1);
  for (std::size_t l = 0; l < sizes_.size(); ++l) {
    if (sizes_[l] <= 0) throw Error(fmt::format("layer {} has {} elements; every layer needs at least one", l, sizes_[l]));
    elem_offsets_.push_back(elem_offsets_.back() + sizes_[l]);
    word_offsets_.push_back(word_offsets_.back() + words_for(sizes_[l]));
  }
}

uint64_t LayerTable::hash() const {
  uint64_t h = fnv1a_u64(static_cast<uint64_t>(sizes_.size()));
  for (int64_t d : sizes_) h = fnv1a_u64(static_cast<uint64_t>(d), h);
  return h;
}

std::string LayerTable::describe() const {
  return fmt::format("{} layers, {} parameters, {} bytes per compressed message ({} bytes fp32)", num_layers(),
                     total_elements(), message_bytes(), fp32_bytes());
}

}  // namespace efsign
