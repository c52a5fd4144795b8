// Internal to src/compress: the per-path kernels behind sign_codec.h's dispatch.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "efsign/sign_codec.h"

namespace efsign::codec::detail {

// 32 double lanes for the L1 sum (Note [bit-exact arithmetic]): lane = i % 32, each
// summed in index order, then combined by a fixed halving tree. 32 lanes, not fewer,
// so that the SIMD path has eight independent add chains: with two, the chains'
// latency, not memory, bounded compress.
struct L1Lanes {
  static constexpr int kLanes = 32;
  double lane[kLanes] = {};
  double total() const {
    double t[kLanes];
    for (int i = 0; i < kLanes; ++i) t[i] = lane[i];
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int i = 0; i < w; ++i) t[i] = t[i] + t[i + w];
    return t[0];
  }
};


// One element of compress_layer, shared by the portable loop and the SIMD tails.
struct ElementOp {
  const float* grad;
  const float* param;
  float* momentum;
  float* state;
  float lr, wd, beta, prev_scale;

  inline float operator()(int64_t i) const {
    float g = grad[i];
    if (param) g = g + wd * param[i];
    if (momentum) {
      const float m = beta * momentum[i] + g;
      momentum[i] = m;
      g = m;
    }
    const float d = lr * g;
    if (!state) return d;
    const float c = state[i];
    const float e = c - (c >= 0.0f ? prev_scale : -prev_scale);
    const float p = e + d;
    state[i] = p;
    return p;
  }
};

// What decode does with the average d of each element (see sign_codec.h).
enum class DecodeOp {
  kStore,  // out = d (decode_average; a large aligned output is streamed past the cache)
  kApply,  // x = x - d (decode_average_apply)
  kAdd,    // out = a + d, a the addend (decode_add: the two-phase server's p = e + d)
};

// Calls f(wd, mom, ef), each a std::bool_constant saying whether op has that optional
// part (weight decay, momentum, EF state), so that every path compiles one loop per
// combination and none branches on them per element.
template <typename F>
void with_compress_parts(const ElementOp& op, F&& f) {
  auto pick = [](bool on, auto&& next) {
    if (on)
      next(std::true_type{});
    else
      next(std::false_type{});
  };
  pick(op.param != nullptr, [&](auto wd) {
    pick(op.momentum != nullptr, [&](auto mom) { pick(op.state != nullptr, [&](auto ef) { f(wd, mom, ef); }); });
  });
}

// Processes elements [begin, n) one at a time, adding into words and lanes.
void compress_tail(const ElementOp& op, int64_t begin, int64_t n, uint32_t* words, L1Lanes& l1);

// Tuning shared by the SIMD paths (measured with `efsign-bench codec`, see bench/README.md).
// Compress is bound by how many cache misses one core keeps in flight, not by DRAM:
// prefetching each input stream 16 KiB ahead made a ResNet-18-sized compress about
// 15% faster on the development machine (8 KiB: less; 32 KiB: no better).
constexpr int64_t kPrefetchAhead = 4096;  // floats
// A write-only decode output at least this large goes around the cache (non-temporal
// stores): a store through the cache first reads the line from memory, so streaming
// halves decode-average's traffic. 4 MiB is beyond any current x86 core's L2, so such
// an output would not be read back from L2 anyway; smaller ones stay cached for
// whoever reads them next.
constexpr int64_t kStreamMinBytes = int64_t{4} << 20;

// Software prefetch of the 32 floats (two cache lines) at p, for reading: what
// compress does for every input stream, kPrefetchAhead floats ahead.
inline void prefetch_input(const float* p) {
  __builtin_prefetch(p, 0, 3);
  __builtin_prefetch(p + 16, 0, 3);
}

// Decode's output stream, prefetched as compress's inputs are. After anything that
// sweeps memory (backward; the benchmark's memcpy) the output's page-table entries
// are out of the TLB and the caches, and the hardware prefetchers stop at each 4 KiB
// page. An output that is read too (x -= d, or the vote): both lines of the 32
// floats, for writing; a ResNet-18-sized decode-average-apply after a memcpy went
// from 2.7 to 2.35 ms. Write-only: one line per page and no more, so that the
// streaming stores keep their saving; what is wanted is the page walk:
// decode-average after a memcpy went from 2.6 to 2.0 ms (1.4 ms when nothing had
// evicted its page-table entries).
inline void prefetch_output(const float* ahead, int64_t i, bool read_too) {
  if (read_too) {
    __builtin_prefetch(ahead, 1, 3);
    __builtin_prefetch(ahead + 16, 1, 3);
  } else if ((i & 1023) == 0) {
    __builtin_prefetch(ahead, 1, 0);
  }
}

// Elements [begin, n) of vote_apply one at a time (the SIMD paths' tails), as the
// portable path: margin = sum of +-1.0f in rank order, then x - (+-mean or 0).
inline void vote_tail(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset, float mean,
                      int64_t begin, int64_t n, float* param) {
  for (int64_t i = begin; i < n; ++i) {
    const int64_t word = word_offset + (i >> 5);
    const uint32_t bit = 1u << (i & 31);
    float margin = 0.0f;
    for (int w = 0; w < world; ++w) margin += (blocks[w * stride + word] & bit) ? 1.0f : -1.0f;
    const float step = margin > 0.0f ? mean : margin < 0.0f ? -mean : 0.0f;
    param[i] = param[i] - step;
  }
}

// s_0, -s_0, s_1, -s_1, ... of `world` blocks; -s_w by flipping the sign bit, which for
// every non-NaN s_w equals the portable path's (-1.0f) * s_w (for a NaN, x86's multiply
// keeps the sign: NaN bits may differ, Note [bit-exact arithmetic]).
inline void signed_scales(const uint32_t* blocks, int world, int64_t stride, int64_t scale_index, float* out) {
  for (int w = 0; w < world; ++w) {
    const uint32_t u = blocks[w * stride + scale_index];
    out[2 * w] = bits_to_float(u);
    out[2 * w + 1] = bits_to_float(u ^ 0x80000000u);
  }
}

// Decodes elements [begin, n) one at a time (the SIMD paths' tails), as the portable path.
inline void decode_tail(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset,
                        const float* scales, int64_t begin, int64_t n, float* out, DecodeOp op, const float* addend) {
  const float wf = static_cast<float>(world);
  for (int64_t i = begin; i < n; ++i) {
    const int64_t word = word_offset + (i >> 5);
    const uint32_t bit = 1u << (i & 31);
    float acc = 0.0f;
    for (int w = 0; w < world; ++w) acc += (blocks[w * stride + word] & bit) ? scales[2 * w] : scales[2 * w + 1];
    const float d = acc / wf;
    out[i] = op == DecodeOp::kApply ? out[i] - d : op == DecodeOp::kAdd ? addend[i] + d : d;
  }
}

#if defined(__x86_64__) || defined(_M_X64)
bool avx512_supported();
void compress_avx512(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1);
void decode_avx512(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                   int64_t n, float* out, DecodeOp op, const float* addend);
void vote_avx512(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset, float mean, int64_t n,
                 float* param);

bool avx2_supported();
void compress_avx2(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1);
void pack_avx2(const float* p, int64_t n, uint32_t* words);
void vote_avx2(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset, float mean, int64_t n,
               float* param);
void decode_avx2(const uint32_t* messages, int world, int64_t message_words, int64_t word_offset,
                 int64_t scale_index, int64_t n, float* out, DecodeOp op, const float* addend);
#endif

}  // namespace efsign::codec::detail
