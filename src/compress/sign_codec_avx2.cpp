// AVX2 path of the sign codec. Built with a function-level target attribute (not a
// file-wide -mavx2) so no AVX2 code can leak into inline functions shared with the
// rest of the program; chosen at run time by best_isa(). Must give the portable
// path's bytes exactly (Note [bit-exact arithmetic] in efsign/sign_codec.h).
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cstdint>
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
    if (i + kPrefetchAhead < full) {  // the 32 floats at i + ahead lie inside every stream
      prefetch_input(op.grad + i + kPrefetchAhead);
      if constexpr (kWd) prefetch_input(op.param + i + kPrefetchAhead);
      if constexpr (kMom) prefetch_input(op.momentum + i + kPrefetchAhead);
      if constexpr (kEf) prefetch_input(op.state + i + kPrefetchAhead);
    }
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
  with_compress_parts(op, [&](auto wd, auto mom, auto ef) {
    compress_avx2_impl<decltype(wd)::value, decltype(mom)::value, decltype(ef)::value>(op, n, words, l1);
  });
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

namespace {

// shift[k] moves bit 8k + j of a broadcast word to bit 31 (the sign) of lane j, for
// _mm256_sllv_epi32: decode and vote read the word's bits as blendv masks this way.
EFSIGN_AVX2 inline void sign_bit_shifts(__m256i shift[4]) {
  for (int k = 0; k < 4; ++k)
    shift[k] = _mm256_setr_epi32(31 - 8 * k, 30 - 8 * k, 29 - 8 * k, 28 - 8 * k, 27 - 8 * k, 26 - 8 * k,
                                 25 - 8 * k, 24 - 8 * k);
}

template <DecodeOp kOp>
EFSIGN_AVX2 void decode_avx2_impl(const uint32_t* messages, int world, int64_t message_words, int64_t word_offset,
                                  int64_t scale_index, int64_t n, float* out, const float* addend) {
  std::vector<float> scale(2 * static_cast<std::size_t>(world));
  signed_scales(messages, world, message_words, scale_index, scale.data());
  // blendv reads only bit 31 of each lane: +s_w for a set bit, -s_w for a clear one.
  __m256i shift[4];
  sign_bit_shifts(shift);
  // Dividing by a power of two equals multiplying by its inverse exactly (both are
  // the correctly rounded value of the same real number), and a multiply is cheaper.
  const bool pow2 = (world & (world - 1)) == 0;
  const __m256 wf = _mm256_set1_ps(static_cast<float>(world));
  const __m256 inv = _mm256_set1_ps(1.0f / static_cast<float>(world));
  const int64_t full = n & ~int64_t{31};
  const bool stream =
      kOp == DecodeOp::kStore && n * 4 >= kStreamMinBytes && reinterpret_cast<uintptr_t>(out) % 32 == 0;
  for (int64_t i = 0; i < full; i += 32) {
    if (i + kPrefetchAhead < full) {
      prefetch_output(out + i + kPrefetchAhead, i, kOp == DecodeOp::kApply);
      if constexpr (kOp == DecodeOp::kAdd) prefetch_input(addend + i + kPrefetchAhead);
    }
    const int64_t word = word_offset + (i >> 5);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int w = 0; w < world; ++w) {  // rank order 0..W-1, as the portable path
      const __m256i bits = _mm256_set1_epi32(static_cast<int>(messages[w * message_words + word]));
      const __m256 pos = _mm256_broadcast_ss(&scale[2 * w]), neg = _mm256_broadcast_ss(&scale[2 * w + 1]);
      for (int k = 0; k < 4; ++k) {
        const __m256 top = _mm256_castsi256_ps(_mm256_sllv_epi32(bits, shift[k]));
        acc[k] = _mm256_add_ps(acc[k], _mm256_blendv_ps(neg, pos, top));
      }
    }
    for (int k = 0; k < 4; ++k) {
      const __m256 d = pow2 ? _mm256_mul_ps(acc[k], inv) : _mm256_div_ps(acc[k], wf);
      float* x = out + i + 8 * k;
      if constexpr (kOp == DecodeOp::kApply)
        _mm256_storeu_ps(x, _mm256_sub_ps(_mm256_loadu_ps(x), d));
      else if constexpr (kOp == DecodeOp::kAdd)
        _mm256_storeu_ps(x, _mm256_add_ps(_mm256_loadu_ps(addend + i + 8 * k), d));
      else if (stream)
        _mm256_stream_ps(x, d);
      else
        _mm256_storeu_ps(x, d);
    }
  }
  if (stream) _mm_sfence();  // order the non-temporal stores before anything after us
  decode_tail(messages, world, message_words, word_offset, scale.data(), full, n, out, kOp, addend);
}

}  // namespace

// The operation is a template parameter so that each loop has no branch on it.
void decode_avx2(const uint32_t* messages, int world, int64_t message_words, int64_t word_offset, int64_t scale_index,
                 int64_t n, float* out, DecodeOp op, const float* addend) {
  auto* f = op == DecodeOp::kApply ? &decode_avx2_impl<DecodeOp::kApply>
            : op == DecodeOp::kAdd ? &decode_avx2_impl<DecodeOp::kAdd>
                                   : &decode_avx2_impl<DecodeOp::kStore>;
  f(messages, world, message_words, word_offset, scale_index, n, out, addend);
}

EFSIGN_AVX2 void vote_avx2(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset, float mean,
                           int64_t n, float* param) {
  __m256i shift[4];
  sign_bit_shifts(shift);
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f);
  const __m256 up = _mm256_set1_ps(mean), down = _mm256_set1_ps(-mean);
  const int64_t full = n & ~int64_t{31};
  for (int64_t i = 0; i < full; i += 32) {
    if (i + kPrefetchAhead < full) prefetch_output(param + i + kPrefetchAhead, i, /*read_too=*/true);
    const int64_t word = word_offset + (i >> 5);
    __m256 margin[4] = {zero, zero, zero, zero};
    for (int w = 0; w < world; ++w) {  // +-1.0f in rank order: exact, as the portable path
      const __m256i bits = _mm256_set1_epi32(static_cast<int>(blocks[w * stride + word]));
      for (int k = 0; k < 4; ++k) {
        const __m256 top = _mm256_castsi256_ps(_mm256_sllv_epi32(bits, shift[k]));
        margin[k] = _mm256_add_ps(margin[k], _mm256_blendv_ps(minus_one, one, top));
      }
    }
    for (int k = 0; k < 4; ++k) {
      // margin > 0: +mean; margin < 0: -mean; a tie: +0.0f (x - 0.0f, as the portable path).
      const __m256 step = _mm256_or_ps(_mm256_and_ps(_mm256_cmp_ps(margin[k], zero, _CMP_GT_OQ), up),
                                       _mm256_and_ps(_mm256_cmp_ps(margin[k], zero, _CMP_LT_OQ), down));
      float* x = param + i + 8 * k;
      _mm256_storeu_ps(x, _mm256_sub_ps(_mm256_loadu_ps(x), step));
    }
  }
  vote_tail(blocks, world, stride, word_offset, mean, full, n, param);
}

}  // namespace efsign::codec::detail

#endif  // x86-64
