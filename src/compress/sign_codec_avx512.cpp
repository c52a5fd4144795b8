// AVX-512 path of the sign codec: the AVX2 path's operations on 16 floats at a time,
// with the sign tests landing in mask registers, so a 32-element word costs about
// half the instructions (compress is instruction-bound on one core, see
// bench/README.md). Function-level target attribute, chosen at run time by
// best_isa(); must give the portable path's bytes exactly (Note [bit-exact
// arithmetic] in efsign/sign_codec.h).
#if defined(__x86_64__) || defined(_M_X64)

// GCC 12's avx512fintrin.h fills "undefined" vectors by self-assignment, which
// -Wmaybe-uninitialized reports at every use (a known false positive of that header).
// It is reported where the intrinsics are inlined, in this file's functions, so it is
// off for the whole file rather than around the #include.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "codec_internal.h"

#define EFSIGN_AVX512 __attribute__((target("avx512f")))

namespace efsign::codec::detail {

// __builtin_cpu_supports also checks that the OS saves the ZMM state (XGETBV).
bool avx512_supported() { return __builtin_cpu_supports("avx512f"); }

namespace {

// The upper 8 floats of v as a 256-bit vector.
EFSIGN_AVX512 inline __m256 high_half(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

template <bool kWd, bool kMom, bool kEf>
EFSIGN_AVX512 void compress_avx512_impl(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 lr = _mm512_set1_ps(op.lr);
  const __m512 wd = _mm512_set1_ps(op.wd);
  const __m512 beta = _mm512_set1_ps(op.beta);
  const __m512 pos_s = _mm512_set1_ps(op.prev_scale);
  const __m512 neg_s = _mm512_set1_ps(-op.prev_scale);
  // acc[k] holds L1 lanes 8k..8k+7: four independent chains, one add each per word.
  __m512d acc[4];
  for (int k = 0; k < 4; ++k) acc[k] = _mm512_setzero_pd();
  const int64_t full = n & ~int64_t{31};
  for (int64_t i = 0; i < full; i += 32) {
    if (i + kPrefetchAhead < full) {  // the 32 floats at i + ahead lie inside every stream
      prefetch_input(op.grad + i + kPrefetchAhead);
      if constexpr (kWd) prefetch_input(op.param + i + kPrefetchAhead);
      if constexpr (kMom) prefetch_input(op.momentum + i + kPrefetchAhead);
      if constexpr (kEf) prefetch_input(op.state + i + kPrefetchAhead);
    }
    uint32_t word = 0;
    for (int h = 0; h < 2; ++h) {
      const int64_t j = i + 16 * h;
      __m512 g = _mm512_loadu_ps(op.grad + j);
      if constexpr (kWd) g = _mm512_add_ps(g, _mm512_mul_ps(wd, _mm512_loadu_ps(op.param + j)));
      if constexpr (kMom) {
        const __m512 m = _mm512_add_ps(_mm512_mul_ps(beta, _mm512_loadu_ps(op.momentum + j)), g);
        _mm512_storeu_ps(op.momentum + j, m);
        g = m;
      }
      __m512 p = _mm512_mul_ps(lr, g);
      if constexpr (kEf) {
        const __m512 c = _mm512_loadu_ps(op.state + j);
        const __m512 sgn = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(c, zero, _CMP_GE_OQ), neg_s, pos_s);
        p = _mm512_add_ps(_mm512_sub_ps(c, sgn), p);
        _mm512_storeu_ps(op.state + j, p);
      }
      // The compare (not the sign bit) decides: -0.0 >= 0 packs as +1.
      word |= static_cast<uint32_t>(_mm512_cmp_ps_mask(p, zero, _CMP_GE_OQ)) << (16 * h);
      const __m512 a = _mm512_abs_ps(p);
      acc[2 * h] = _mm512_add_pd(acc[2 * h], _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
      acc[2 * h + 1] = _mm512_add_pd(acc[2 * h + 1], _mm512_cvtps_pd(high_half(a)));
    }
    words[i >> 5] = word;
  }
  for (int k = 0; k < 4; ++k) _mm512_storeu_pd(l1.lane + 8 * k, acc[k]);
  compress_tail(op, full, n, words, l1);
}

}  // namespace

void compress_avx512(const ElementOp& op, int64_t n, uint32_t* words, L1Lanes& l1) {
  with_compress_parts(op, [&](auto wd, auto mom, auto ef) {
    compress_avx512_impl<decltype(wd)::value, decltype(mom)::value, decltype(ef)::value>(op, n, words, l1);
  });
}

namespace {

template <DecodeOp kOp>
EFSIGN_AVX512 void decode_avx512_impl(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset,
                                      int64_t scale_index, int64_t n, float* out, const float* addend) {
  std::vector<float> scale(2 * static_cast<std::size_t>(world));
  signed_scales(blocks, world, stride, scale_index, scale.data());
  // A power-of-two divide equals a multiply by its inverse exactly (see decode_avx2).
  const bool pow2 = (world & (world - 1)) == 0;
  const __m512 wf = _mm512_set1_ps(static_cast<float>(world));
  const __m512 inv = _mm512_set1_ps(1.0f / static_cast<float>(world));
  const int64_t full = n & ~int64_t{31};
  const bool stream =
      kOp == DecodeOp::kStore && n * 4 >= kStreamMinBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0;
  for (int64_t i = 0; i < full; i += 32) {
    if (i + kPrefetchAhead < full) {
      prefetch_output(out + i + kPrefetchAhead, i, kOp == DecodeOp::kApply);
      if constexpr (kOp == DecodeOp::kAdd) prefetch_input(addend + i + kPrefetchAhead);
    }
    const int64_t word = word_offset + (i >> 5);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int w = 0; w < world; ++w) {  // rank order 0..W-1, as the portable path
      const uint32_t bits = blocks[w * stride + word];
      const __m512 pos = _mm512_set1_ps(scale[2 * w]), neg = _mm512_set1_ps(scale[2 * w + 1]);
      // The word's 32 bits are two masks of 16 lanes: a set bit picks +s_w, a clear -s_w.
      acc[0] = _mm512_add_ps(acc[0], _mm512_mask_blend_ps(static_cast<__mmask16>(bits & 0xffffu), neg, pos));
      acc[1] = _mm512_add_ps(acc[1], _mm512_mask_blend_ps(static_cast<__mmask16>(bits >> 16), neg, pos));
    }
    for (int h = 0; h < 2; ++h) {
      const __m512 d = pow2 ? _mm512_mul_ps(acc[h], inv) : _mm512_div_ps(acc[h], wf);
      float* x = out + i + 16 * h;
      if constexpr (kOp == DecodeOp::kApply)
        _mm512_storeu_ps(x, _mm512_sub_ps(_mm512_loadu_ps(x), d));
      else if constexpr (kOp == DecodeOp::kAdd)
        _mm512_storeu_ps(x, _mm512_add_ps(_mm512_loadu_ps(addend + i + 16 * h), d));
      else if (stream)
        _mm512_stream_ps(x, d);
      else
        _mm512_storeu_ps(x, d);
    }
  }
  if (stream) _mm_sfence();  // order the non-temporal stores before anything after us
  decode_tail(blocks, world, stride, word_offset, scale.data(), full, n, out, kOp, addend);
}

}  // namespace

// The operation is a template parameter so that each loop has no branch on it.
void decode_avx512(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                   int64_t n, float* out, DecodeOp op, const float* addend) {
  auto* f = op == DecodeOp::kApply ? &decode_avx512_impl<DecodeOp::kApply>
            : op == DecodeOp::kAdd ? &decode_avx512_impl<DecodeOp::kAdd>
                                   : &decode_avx512_impl<DecodeOp::kStore>;
  f(blocks, world, stride, word_offset, scale_index, n, out, addend);
}

EFSIGN_AVX512 void vote_avx512(const uint32_t* blocks, int world, int64_t stride, int64_t word_offset, float mean,
                               int64_t n, float* param) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), minus_one = _mm512_set1_ps(-1.0f);
  const __m512 up = _mm512_set1_ps(mean), down = _mm512_set1_ps(-mean);
  const int64_t full = n & ~int64_t{31};
  for (int64_t i = 0; i < full; i += 32) {
    if (i + kPrefetchAhead < full) prefetch_output(param + i + kPrefetchAhead, i, /*read_too=*/true);
    const int64_t word = word_offset + (i >> 5);
    __m512 margin[2] = {zero, zero};
    for (int w = 0; w < world; ++w) {  // +-1.0f in rank order: exact, as the portable path
      const uint32_t bits = blocks[w * stride + word];
      margin[0] = _mm512_add_ps(margin[0], _mm512_mask_blend_ps(static_cast<__mmask16>(bits & 0xffffu), minus_one, one));
      margin[1] = _mm512_add_ps(margin[1], _mm512_mask_blend_ps(static_cast<__mmask16>(bits >> 16), minus_one, one));
    }
    for (int h = 0; h < 2; ++h) {
      // margin > 0: +mean; margin < 0: -mean; a tie: +0.0f (x - 0.0f, as the portable path).
      __m512 step = _mm512_mask_mov_ps(zero, _mm512_cmp_ps_mask(margin[h], zero, _CMP_GT_OQ), up);
      step = _mm512_mask_mov_ps(step, _mm512_cmp_ps_mask(margin[h], zero, _CMP_LT_OQ), down);
      float* x = param + i + 16 * h;
      _mm512_storeu_ps(x, _mm512_sub_ps(_mm512_loadu_ps(x), step));
    }
  }
  vote_tail(blocks, world, stride, word_offset, mean, full, n, param);
}

}  // namespace efsign::codec::detail

#endif  // x86-64
