// efsign/layer_table.h — the wire layout of one step's message.
//
// Note [wire format]
//   One message per rank per step:
//     [ words of layer 0 | words of layer 1 | ... | words of layer L-1 | scales[L] ]
//   words: little-endian uint32; element i of a layer is bit (i % 32) of word (i / 32)
//   of that layer; bit 1 means p_i >= 0 (float comparison, so -0.0 -> 1); unused tail
//   bits are 0. Every layer starts on a word boundary: words_l = ceil(d_l / 32).
//   scales: one float32 per layer, after all words.
//   bytes per rank per step = 4 * sum_l ceil(d_l / 32) + 4 * L.
// This matches the lane order of CUDA __ballot_sync and AVX movemask, so CPU and GPU
// produce the same bytes. "Layer" is one parameter tensor (weights and biases apart).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace efsign {

class LayerTable {
 public:
  LayerTable() = default;
  explicit LayerTable(std::vector<int64_t> sizes);

  int64_t num_layers() const { return static_cast<int64_t>(sizes_.size()); }
  int64_t size(int64_t l) const { return sizes_[l]; }
  const std::vector<int64_t>& sizes() const { return sizes_; }
  // First element of layer l in a flat concatenation of all layers.
  int64_t elem_offset(int64_t l) const { return elem_offsets_[l]; }
  // First word of layer l inside a message.
  int64_t word_offset(int64_t l) const { return word_offsets_[l]; }
  int64_t words(int64_t l) const { return word_offsets_[l + 1] - word_offsets_[l]; }
  int64_t total_elements() const { return elem_offsets_.back(); }
  int64_t total_words() const { return word_offsets_.back(); }
  // Index (in uint32 units) of the scale array inside a message.
  int64_t scale_offset_words() const { return total_words(); }
  // Whole message length in uint32 units (words + one scale per layer).
  int64_t message_words() const { return total_words() + num_layers(); }
  int64_t message_bytes() const { return 4 * message_words(); }
  // What an fp32 allreduce of the same gradients hands to the network per rank.
  int64_t fp32_bytes() const { return 4 * total_elements(); }
  // 64-bit FNV-1a hash of L and every d_l; ranks compare it at start-up.
  uint64_t hash() const;
  std::string describe() const;  // "L layers, N params, M bytes/message"

 private:
  std::vector<int64_t> sizes_;
  std::vector<int64_t> elem_offsets_{0};
  std::vector<int64_t> word_offsets_{0};
};

inline int64_t words_for(int64_t n) { return (n + 31) / 32; }

}  // namespace efsign
