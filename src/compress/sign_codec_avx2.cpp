// AVX2 path of the sign codec. Built with a function-level target attribute (not a
// file-wide -mavx2) so no AVX2 code can leak into inline functions shared with the
// rest of the program; chosen at run time by best_isa(). Must give the portable
// path's bytes exactly (Note [bit-exact arithmetic] in efsign/sign_codec.h).
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <vector>

#include "codec_internal.h"

#define EFSIGN_AVX2 __attribute__((target("avx2")))

namespace efsign::codec::detail {

bool avx2_supported() { return __builtin_cpu_supports("avx2"); }

namespace {

template <bool kWd, bool kMom, bool kEf>
EFSIGN_AVX2 void compress_avx2_impl(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 lr = _mm256_set1_ps(op.lr);
  const __m256 wd = _mm256_set1_ps(op.wd);
  const __m256 beta = _mm256_set1_ps(op.beta);
  const __m256 pos_s = _mm256_set1_ps(op.prev_scale);
  const __m256 neg_s = _mm256_set1_ps(-op.prev_scale);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  // Lanes 8k..8k+3 and 8k+4..8k+7 (k = 0..3) of L1Lanes: eight independent chains.
  __m256d acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm256_setzero_pd();
  const int64_t full = n & ~int64_t{31};
  for (int64_t i = 0; i < full; i += 32) {
    uint32_t word = 0;
    for (int k = 0; k < 4; ++k) {
      const int64_t j = i + 8 * k;
      __m256 g = _mm256_loadu_ps(op.grad + j);
      if constexpr (kWd) g = _mm256_add_ps(g, _mm256_mul_ps(wd, _mm256_loadu_ps(op.param + j)));
      if constexpr (kMom) {
        const __m256 m = _mm256_add_ps(_mm256_mul_ps(beta, _mm256_loadu_ps(op.momentum + j)), g);
        _mm256_storeu_ps(op.momentum + j, m);
        g = m;
      }
      __m256 p = _mm256_mul_ps(lr, g);
      if constexpr (kEf) {
        const __m256 c = _mm256_loadu_ps(op.state + j);
        const __m256 sgn = _mm256_blendv_ps(neg_s, pos_s, _mm256_cmp_ps(c, zero, _CMP_GE_OQ));
        p = _mm256_add_ps(_mm256_sub_ps(c, sgn), p);
        _mm256_storeu_ps(op.state + j, p);
      }
      // Compare first, then movemask: a raw movemask of p would call -0.0 negative.
      word |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(p, zero, _CMP_GE_OQ))) << (8 * k);
      const __m256 a = _mm256_and_ps(p, abs_mask);
      acc[2 * k] = _mm256_add_pd(acc[2 * k], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
      acc[2 * k + 1] = _mm256_add_pd(acc[2 * k + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    }
    words[i >> 5] = word;
  }
  for (int k = 0; k < 8; ++k) _mm256_storeu_pd(l1.lane + 4 * k, acc[k]);
  compress_tail(op, full, n, words, l1);
}

}  // namespace

void compress_avx2(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1) {
  const int key = (op.param ? 4 : 0) | (op.momentum ? 2 : 0) | (op.state ? 1 : 0);
  switch (key) {
    case 0: return compress_avx2_impl<false, false, false>(op, n, words, l1);
    case 1: return compress_avx2_impl<false, false, true>(op, n, words, l1);
    case 2: return compress_avx2_impl<false, true, false>(op, n, words, l1);
    case 3: return compress_avx2_impl<false, true, true>(op, n, words, l1);
    case 4: return compress_avx2_impl<true, false, false>(op, n, words, l1);
    case 5: return compress_avx2_impl<true, false, true>(op, n, words, l1);
    case 6: return compress_avx2_impl<true, true, false>(op, n, words, l1);
    default: return compress_avx2_impl<true, true, true>(op, n, words, l1);
  }
}

EFSIGN_AVX2 void pack_avx2(const float* p, int64_t n, uint32_t* words) {
  const __m256 zero = _mm256_setzero_ps();
  const int64_t full = n & ~int64_t{31};
  for (int64_t i = 0; i < full; i += 32) {
    uint32_t word = 0;
    for (int k = 0; k < 4; ++k) {
      const __m256 v = _mm256_loadu_ps(p + i + 8 * k);
      word |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ))) << (8 * k);
    }
    words[i >> 5] = word;
  }
  for (int64_t i = full; i < n; ++i)
    if (p[i] >= 0.0f) words[i >> 5] |= (1u << (i & 31));
}

// row[b][j] = bit j of b ? 0 : the float sign bit (8 KiB, stays in L1).
struct FlipTable {
  alignas(32) uint32_t row[256][8];
  FlipTable() {
    for (int b = 0; b < 256; ++b)
      for (int j = 0; j < 8; ++j) row[b][j] = ((b >> j) & 1) ? 0u : 0x80000000u;
  }
};
const FlipTable kFlip;

EFSIGN_AVX2 void decode_avx2(const uint32_t* messages, int world, int64_t message_words, int64_t word_offset,
                             int64_t scale_index, int64_t n, float* inout, bool apply) {
  std::vector<float> pos(world);
  for (int w = 0; w < world; ++w) pos[w] = bits_to_float(messages[w * message_words + scale_index]);
  // +-s_w without a compare or blend: s_w with its sign bit XORed by a mask looked up
  // per byte of the word (bit 0 -> flip, i.e. -s_w).
  // Dividing by a power of two equals multiplying by its inverse exactly (both are
  // the correctly rounded value of the same real number), and a multiply is cheaper.
  const bool pow2 = (world & (world - 1)) == 0;
  const __m256 wf = _mm256_set1_ps(static_cast<float>(world));
  const __m256 inv = _mm256_set1_ps(1.0f / static_cast<float>(world));
  const int64_t full = n & ~int64_t{31};
  for (int64_t i = 0; i < full; i += 32) {
    const int64_t word = word_offset + (i >> 5);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int w = 0; w < world; ++w) {  // rank order 0..W-1, as the portable path
      const uint32_t bits = messages[w * message_words + word];
      const __m256i s = _mm256_castps_si256(_mm256_set1_ps(pos[w]));
      for (int k = 0; k < 4; ++k) {
        const __m256i flip = _mm256_load_si256(reinterpret_cast<const __m256i*>(kFlip.row[(bits >> (8 * k)) & 0xffu]));
        acc[k] = _mm256_add_ps(acc[k], _mm256_castsi256_ps(_mm256_xor_si256(s, flip)));
      }
    }
    for (int k = 0; k < 4; ++k) {
      const __m256 d = pow2 ? _mm256_mul_ps(acc[k], inv) : _mm256_div_ps(acc[k], wf);
      float* out = inout + i + 8 * k;
      _mm256_storeu_ps(out, apply ? _mm256_sub_ps(_mm256_loadu_ps(out), d) : d);
    }
  }
  const float wfs = static_cast<float>(world);
  for (int64_t i = full; i < n; ++i) {
    const int64_t word = word_offset + (i >> 5);
    const uint32_t bit = 1u << (i & 31);
    float acc = 0.0f;
    for (int w = 0; w < world; ++w) acc += (messages[w * message_words + word] & bit) ? pos[w] : -pos[w];
    const float d = acc / wfs;
    inout[i] = apply ? inout[i] - d : d;
  }
}

}  // namespace efsign::codec::detail

#endif  // x86-64
