// Portable sign codec and the run-time dispatch to the AVX2 and AVX-512 paths.
#include "efsign/sign_codec.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
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
    l1.lane[i & 31] += static_cast<double>(std::fabs(p));
  }
}

namespace {

// The portable compress: the same operations as ElementOp, with the optional parts
// resolved at compile time and the work in blocks of 32 (one L1 lane each) so the
// compiler can vectorise it without changing any result.
template <bool kWd, bool kMom, bool kEf>
void compress_portable_impl(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1) {
  // Locals, not op's members: stores through float* could alias op's float fields and
  // would force a reload of every constant on every element.
  const float* __restrict__ grad = op.grad;
  const float* __restrict__ param = op.param;
  float* __restrict__ mom = op.momentum;
  float* __restrict__ state = op.state;
  const float lr = op.lr, wd = op.wd, beta = op.beta, pos = op.prev_scale, neg = -op.prev_scale;
  double lane[L1Lanes::kLanes];
  for (int j = 0; j < L1Lanes::kLanes; ++j) lane[j] = l1.lane[j];
  const int64_t full = n & ~int64_t{31};
  for (int64_t i = 0; i < full; i += 32) {
    float p[32];
    for (int j = 0; j < 32; ++j) {
      float g = grad[i + j];
      if constexpr (kWd) g = g + wd * param[i + j];
      if constexpr (kMom) {
        const float m = beta * mom[i + j] + g;
        mom[i + j] = m;
        g = m;
      }
      float v = lr * g;
      if constexpr (kEf) {
        const float c = state[i + j];
        v = (c - (c >= 0.0f ? pos : neg)) + v;
        state[i + j] = v;
      }
      p[j] = v;
    }
    uint32_t bits = 0;
    for (int j = 0; j < 32; ++j) {
      bits |= static_cast<uint32_t>(p[j] >= 0.0f) << j;
      lane[j] += static_cast<double>(std::fabs(p[j]));
    }
    words[i >> 5] = bits;
  }
  for (int j = 0; j < L1Lanes::kLanes; ++j) l1.lane[j] = lane[j];
  compress_tail(op, full, n, words, l1);
}

void compress_portable(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1) {
  with_compress_parts(op, [&](auto wd, auto mom, auto ef) {
    compress_portable_impl<decltype(wd)::value, decltype(mom)::value, decltype(ef)::value>(op, n, words, l1);
  });
}

// row[b][j] = bit j of b ? +1.0f : -1.0f.
struct SignTable {
  float row[256][8];
  SignTable() {
    for (int b = 0; b < 256; ++b)
      for (int j = 0; j < 8; ++j) row[b][j] = ((b >> j) & 1) ? 1.0f : -1.0f;
  }
};
const SignTable kSignTable;

template <DecodeOp kOp>
void decode_portable(const uint32_t* messages, int world, int64_t message_words, int64_t word_offset,
                     int64_t scale_index, int64_t n, float* out, const float* addend_ptr) {
  const float* __restrict__ addend = addend_ptr;
  std::vector<float> pos_v(world);
  for (int w = 0; w < world; ++w) pos_v[w] = bits_to_float(messages[w * message_words + scale_index]);
  const float* __restrict__ pos = pos_v.data();
  float* __restrict__ inout = out;
  const float wf = static_cast<float>(world);
  for (int64_t base = 0; base < n; base += 32) {
    const int64_t word = word_offset + (base >> 5);
    const int64_t count = std::min<int64_t>(32, n - base);
    float acc[32];
    for (int j = 0; j < 32; ++j) acc[j] = 0.0f;
    for (int w = 0; w < world; ++w) {  // rank order 0..W-1
      const uint32_t bits = messages[w * message_words + word];
      const float sp = pos[w];
      // s * (+-1.0f) is exactly +-s, so this equals adding (bit ? s : -s), vectorised.
      for (int k = 0; k < 4; ++k) {
        const float* __restrict__ t = kSignTable.row[(bits >> (8 * k)) & 0xffu];
        for (int j = 0; j < 8; ++j) acc[8 * k + j] += t[j] * sp;
      }
    }
    for (int64_t j = 0; j < count; ++j) {
      const float d = acc[j] / wf;
      if constexpr (kOp == DecodeOp::kApply) {
        inout[base + j] = inout[base + j] - d;
      } else if constexpr (kOp == DecodeOp::kAdd) {
        inout[base + j] = addend[base + j] + d;
      } else {
        inout[base + j] = d;
      }
    }
  }
}

}  // namespace
}  // namespace detail

bool isa_available(Isa isa) {
  switch (isa) {
    case Isa::kPortable: return true;
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx2: return detail::avx2_supported();
    case Isa::kAvx512: return detail::avx512_supported() && detail::avx2_supported();
#endif
    default: return false;
  }
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    default: return "portable";
  }
}

Isa parse_isa(const std::string& name) {
  Isa isa;
  if (name == "portable") isa = Isa::kPortable;
  else if (name == "avx2") isa = Isa::kAvx2;
  else if (name == "avx512") isa = Isa::kAvx512;
  else throw UsageError(fmt::format("unknown codec path '{}': expected avx512, avx2 or portable", name));
  if (!isa_available(isa)) throw UsageError(fmt::format("codec path '{}' is not supported by this CPU", name));
  return isa;
}

Isa best_isa() {
  static const Isa chosen = [] {
    const char* env = std::getenv("EFSIGN_ISA");
    if (env && *env) {
      try {
        return parse_isa(env);
      } catch (const UsageError& e) {
        throw UsageError(std::string("EFSIGN_ISA: ") + e.what());
      }
    }
    // AVX2 before AVX-512: on gradients that stream from memory (large models, where
    // the codec's time matters) AVX-512 measured 5-10% slower; in cache it is faster,
    // but there the codec's time is small anyway (bench/README.md, "codec").
    if (isa_available(Isa::kAvx2)) return Isa::kAvx2;
    return isa_available(Isa::kAvx512) ? Isa::kAvx512 : Isa::kPortable;
  }();
  return chosen;
}

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
  if (isa == Isa::kAvx512) {
    detail::compress_avx512(op, n, words, l1);
  } else if (isa == Isa::kAvx2) {
    detail::compress_avx2(op, n, words, l1);
  } else
#endif
  {
    detail::compress_portable(op, n, words, l1);
  }
  const double total = l1.total();
  if (params.scale_mode == ScaleMode::kFixed)  // Note [non-finite]: a poisoned layer sends NaN
    return std::isfinite(total) ? params.fixed_scale : std::numeric_limits<float>::quiet_NaN();
  return static_cast<float>(total / static_cast<double>(n));
}

void pack_signs(Span<const float> p, Span<uint32_t> words, Isa isa) {
  check_isa(isa);
  const int64_t n = static_cast<int64_t>(p.size());
  if (static_cast<int64_t>(words.size()) != words_for(n)) throw Error("pack_signs: wrong number of words");
  std::memset(words.data(), 0, words.size_bytes());
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::kAvx2 || isa == Isa::kAvx512) {  // AVX-512 machines have AVX2 (isa_available)
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

// Every word and scale that decode_blocks/vote_apply will read lies inside `blocks`.
static void check_blocks(const char* who, Span<const uint32_t> blocks, int world, int64_t stride,
                         int64_t word_offset, int64_t scale_index, int64_t n) {
  if (world < 1) throw Error(fmt::format("{}: world size must be >= 1", who));
  if (n == 0) return;
  const int64_t last = std::max(word_offset + words_for(n) - 1, scale_index);
  if (word_offset < 0 || scale_index < 0 || stride < 0 ||
      (world - 1) * stride + last >= static_cast<int64_t>(blocks.size()))
    throw Error(fmt::format("{}: {} blocks of stride {} (words from {}, scale at {}) overrun {} words", who, world,
                            stride, word_offset, scale_index, blocks.size()));
}

static void decode_dispatch(Span<const uint32_t> blocks, int world, int64_t stride, int64_t word_offset,
                            int64_t scale_index, Span<float> out, detail::DecodeOp op, const float* addend, Isa isa) {
  check_isa(isa);
  const int64_t n = static_cast<int64_t>(out.size());
  check_blocks("decode", blocks, world, stride, word_offset, scale_index, n);
  if (n == 0) return;
  using detail::DecodeOp;
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::kAvx512)
    return detail::decode_avx512(blocks.data(), world, stride, word_offset, scale_index, n, out.data(), op, addend);
  if (isa == Isa::kAvx2)
    return detail::decode_avx2(blocks.data(), world, stride, word_offset, scale_index, n, out.data(), op, addend);
#endif
  if (op == DecodeOp::kApply)
    detail::decode_portable<DecodeOp::kApply>(blocks.data(), world, stride, word_offset, scale_index, n, out.data(),
                                              addend);
  else if (op == DecodeOp::kAdd)
    detail::decode_portable<DecodeOp::kAdd>(blocks.data(), world, stride, word_offset, scale_index, n, out.data(),
                                            addend);
  else
    detail::decode_portable<DecodeOp::kStore>(blocks.data(), world, stride, word_offset, scale_index, n, out.data(),
                                              addend);
}

void decode_blocks(Span<const uint32_t> blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                   Span<float> inout, bool apply, Isa isa) {
  decode_dispatch(blocks, world, stride, word_offset, scale_index, inout,
                  apply ? detail::DecodeOp::kApply : detail::DecodeOp::kStore, nullptr, isa);
}

void decode_add(Span<const uint32_t> blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                Span<const float> addend, Span<float> out, Isa isa) {
  if (addend.size() != out.size()) throw Error("decode_add: addend and output differ in size");
  const float* a = addend.data();
  const float* o = out.data();
  if (!out.empty() && a < o + out.size() && o < a + addend.size()) throw Error("decode_add: addend and output overlap");
  decode_dispatch(blocks, world, stride, word_offset, scale_index, out, detail::DecodeOp::kAdd, addend.data(), isa);
}

void vote_apply(Span<const uint32_t> blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                Span<float> param, Isa isa) {
  check_isa(isa);
  const int64_t n = static_cast<int64_t>(param.size());
  check_blocks("vote", blocks, world, stride, word_offset, scale_index, n);
  if (n == 0) return;
  float sum = 0.0f;  // rank order, then one IEEE division (Note [bit-exact arithmetic])
  for (int w = 0; w < world; ++w) sum += bits_to_float(blocks[w * stride + scale_index]);
  const float mean = sum / static_cast<float>(world);
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == Isa::kAvx512) return detail::vote_avx512(blocks.data(), world, stride, word_offset, mean, n, param.data());
  if (isa == Isa::kAvx2) return detail::vote_avx2(blocks.data(), world, stride, word_offset, mean, n, param.data());
#endif
  for (int64_t base = 0; base < n; base += 32) {
    const int64_t word = word_offset + (base >> 5);
    // margin = (#positive) - (#negative), summed as +-1.0f: exact for any world < 2^24,
    // and the same table lookups as decode, which vectorise.
    float margin[32];
    for (int j = 0; j < 32; ++j) margin[j] = 0.0f;
    for (int w = 0; w < world; ++w) {
      const uint32_t bits = blocks[w * stride + word];
      for (int k = 0; k < 4; ++k) {
        const float* __restrict__ t = detail::kSignTable.row[(bits >> (8 * k)) & 0xffu];
        for (int j = 0; j < 8; ++j) margin[8 * k + j] += t[j];
      }
    }
    const int64_t count = std::min<int64_t>(32, n - base);
    for (int64_t j = 0; j < count; ++j) {
      const float step = margin[j] > 0.0f ? mean : margin[j] < 0.0f ? -mean : 0.0f;
      param[base + j] = param[base + j] - step;
    }
  }
}

static void decode_impl(Span<const uint32_t> messages, int world, const LayerTable& table, int64_t layer,
                        Span<float> inout, Isa isa, bool apply) {
  if (layer < 0 || layer >= table.num_layers()) throw Error("decode: layer index out of range");
  if (static_cast<int64_t>(messages.size()) != world * table.message_words())
    throw Error(fmt::format("decode: got {} words, expected {} messages of {} words", messages.size(), world,
                            table.message_words()));
  if (static_cast<int64_t>(inout.size()) != table.size(layer)) throw Error("decode: output has the wrong size");
  decode_blocks(messages, world, table.message_words(), table.word_offset(layer),
                table.scale_offset_words() + layer, inout, apply, isa);
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
