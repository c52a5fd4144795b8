// Portable sign codec and the run-time dispatch to the AVX2 path.
#include "efsign/sign_codec.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "codec_internal.h"
#include "efsign/error.h"

namespace efsign::codec {
namespace detail {

void compress_tail(const ElementOp& op, int64_t begin, int64_t n, uint32_t* words, L1Lanes& l1) {
  for (int64_t i = begin; i < n; ++i) {
    const float p = op(i);
    if (p >= 0.0f) words[i >> 5] |= (1u << (i & 31));
    l1.lane[i & 7] += static_cast<double>(std::fabs(p));
  }
}

namespace {

template <bool kApply>
void decode_portable(const uint32_t* messages, int world, int64_t message_words, int64_t word_offset,
                     int64_t scale_index, int64_t n, float* inout) {
  // Scales of this layer, one per rank, read once.
  constexpr int kStackRanks = 64;
  float stack_scales[kStackRanks];
  std::vector<float> heap_scales;
  float* scales = stack_scales;
  if (world > kStackRanks) {
    heap_scales.resize(world);
    scales = heap_scales.data();
  }
  for (int w = 0; w < world; ++w) scales[w] = bits_to_float(messages[w * message_words + scale_index]);
  const float wf = static_cast<float>(world);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t word = word_offset + (i >> 5);
    const uint32_t bit = 1u << (i & 31);
    float acc = 0.0f;
    for (int w = 0; w < world; ++w) {
      const float s = scales[w];
      acc += (messages[w * message_words + word] & bit) ? s : -s;
    }
    const float d = acc / wf;
    if constexpr (kApply) {
      inout[i] = inout[i] - d;
    } else {
      inout[i] = d;
    }
  }
}

}  // namespace
}  // namespace detail

bool isa_available(Isa isa) {
  if (isa == Isa::kPortable) return true;
#if defined(__x86_64__) || defined(_M_X64)
  return detail::avx2_supported();
#else
  return false;
#endif
}

Isa best_isa() {
  static const Isa chosen = [] {
    const char* env = std::getenv("EFSIGN_ISA");
    if (env && std::string(env) == "portable") return Isa::kPortable;
    return isa_available(Isa::kAvx2) ? Isa::kAvx2 : Isa::kPortable;
  }();
  return chosen;
}

const char* isa_name(Isa isa) { return isa == Isa::kAvx2 ? "avx2" : "portable"; }

static void check_isa(Isa isa) {
  if (!isa_available(isa)) throw Error(fmt::format("codec path '{}' is not supported by this CPU", isa_name(isa)));
}

float compress_layer(const LayerBuffers& buf, const CompressParams& params, Isa isa) {
  check_isa(isa);
  const int64_t n = static_cast<int64_t>(buf.grad.size());
  if (n == 0) throw Error("compress_layer: empty layer");
  if (static_cast<int64_t>(buf.words.size()) != words_for(n))
    throw Error(fmt::format("compress_layer: {} words given for {} elements (need {})", buf.words.size(), n,
                            words_for(n)));
  const bool wd = params.weight_decay != 0.0f;
  if (wd && static_cast<int64_t>(buf.param.size()) != n)
    throw Error("compress_layer: weight decay needs the parameter values");
  if (!buf.momentum.empty() && static_cast<int64_t>(buf.momentum.size()) != n)
    throw Error("compress_layer: momentum buffer has the wrong size");
  if (!buf.state.empty() && static_cast<int64_t>(buf.state.size()) != n)
    throw Error("compress_layer: error-feedback state has the wrong size");

  detail::ElementOp op{buf.grad.data(),
                       wd ? buf.param.data() : nullptr,
                       buf.momentum.empty() ? nullptr : buf.momentum.data(),
                       buf.state.empty() ? nullptr : buf.state.data(),
                       params.lr,
                       params.weight_decay,
                       params.momentum,
                       buf.prev_scale};
  uint32_t* words = buf.words.data();
  std::memset(words, 0, buf.words.size_bytes());
  detail::L1Lanes l1;
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::kAvx2) {
    detail::compress_avx2(op, n, words, l1);
  } else
#endif
  {
    detail::compress_tail(op, 0, n, words, l1);
  }
  if (params.scale_mode == ScaleMode::kFixed) return params.fixed_scale;
  return static_cast<float>(l1.total() / static_cast<double>(n));
}

void pack_signs(Span<const float> p, Span<uint32_t> words, Isa isa) {
  check_isa(isa);
  const int64_t n = static_cast<int64_t>(p.size());
  if (static_cast<int64_t>(words.size()) != words_for(n)) throw Error("pack_signs: wrong number of words");
  std::memset(words.data(), 0, words.size_bytes());
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::kAvx2) {
    detail::pack_avx2(p.data(), n, words.data());
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i)
    if (p[i] >= 0.0f) words[i >> 5] |= (1u << (i & 31));
}

void error_from_state(Span<const float> state, float scale, Span<float> error_out) {
  if (state.size() != error_out.size()) throw Error("error_from_state: size mismatch");
  for (std::size_t i = 0; i < state.size(); ++i) {
    const float c = state[i];
    error_out[i] = c - (c >= 0.0f ? scale : -scale);
  }
}

float message_scale(Span<const uint32_t> messages, const LayerTable& table, int rank, int64_t layer) {
  return detail::bits_to_float(messages[rank * table.message_words() + table.scale_offset_words() + layer]);
}

static void decode_impl(Span<const uint32_t> messages, int world, const LayerTable& table, int64_t layer,
                        Span<float> inout, Isa isa, bool apply) {
  check_isa(isa);
  if (world < 1) throw Error("decode: world size must be >= 1");
  if (layer < 0 || layer >= table.num_layers()) throw Error("decode: layer index out of range");
  if (static_cast<int64_t>(messages.size()) != world * table.message_words())
    throw Error(fmt::format("decode: got {} words, expected {} messages of {} words", messages.size(), world,
                            table.message_words()));
  const int64_t n = table.size(layer);
  if (static_cast<int64_t>(inout.size()) != n) throw Error("decode: output has the wrong size");
  const int64_t scale_index = table.scale_offset_words() + layer;
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::kAvx2) {
    detail::decode_avx2(messages.data(), world, table.message_words(), table.word_offset(layer), scale_index, n,
                        inout.data(), apply);
    return;
  }
#endif
  if (apply)
    detail::decode_portable<true>(messages.data(), world, table.message_words(), table.word_offset(layer),
                                  scale_index, n, inout.data());
  else
    detail::decode_portable<false>(messages.data(), world, table.message_words(), table.word_offset(layer),
                                   scale_index, n, inout.data());
}

void decode_average(Span<const uint32_t> messages, int world, const LayerTable& table, int64_t layer,
                    Span<float> out, Isa isa) {
  decode_impl(messages, world, table, layer, out, isa, false);
}

void decode_average_apply(Span<const uint32_t> messages, int world, const LayerTable& table, int64_t layer,
                          Span<float> param, Isa isa) {
  decode_impl(messages, world, table, layer, param, isa, true);
}

}  // namespace efsign::codec
