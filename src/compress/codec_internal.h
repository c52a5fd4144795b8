// Internal to src/compress: the per-path kernels behind sign_codec.h's dispatch.
#pragma once

#include <cstdint>
#include <cstring>

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

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

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

// Processes elements [begin, n) one at a time, adding into words and lanes.
void compress_tail(const ElementOp& op, int64_t begin, int64_t n, uint32_t* words, L1Lanes& l1);

#if defined(__x86_64__) || defined(_M_X64)
bool avx2_supported();
void compress_avx2(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1);
void pack_avx2(const float* p, int64_t n, uint32_t* words);
void decode_avx2(const uint32_t* messages, int world, int64_t message_words, int64_t word_offset,
                 int64_t scale_index, int64_t n, float* inout, bool apply);
#endif

}  // namespace efsign::codec::detail
