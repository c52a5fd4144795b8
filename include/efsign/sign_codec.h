// efsign/sign_codec.h — the CPU sign codec: the specification every other path
// (SIMD, CUDA) must reproduce byte for byte.
//
// compress_layer() does, for one layer of d elements and in ONE pass over memory:
//     g  = grad + wd * x                      (weight decay into the gradient first)
//     m  = beta * m + g ; g = m               (only when a momentum buffer is given)
//     e  = c - s_prev * sign(c)               (error rebuilt from the stored state)
//     p  = e + lr * g ; c = p                 (only when an EF state buffer is given)
//     bit_i = (p_i >= 0) ; L1 += |p_i|
//   and returns the layer's scale: L1 / d (ScaleMode::kMeanAbs) or a fixed value
//   (ScaleMode::kFixed, e.g. lr for signum's unscaled sign).
//
// Note [error state as p]
//   EF-SignSGD's error is e = p - s * sign(p). Instead of storing e (which needs a
//   second pass once s is known), we store c = p and the scale s that was sent with
//   it, and rebuild e on the fly at the next step. Same arithmetic, same bits, one pass:
//   read g and c, write c and the bits. error_from_state() materialises e when a test,
//   metric or checkpoint needs it. The error is kept in lr units, as in the paper's
//   reference code (a learning-rate change does not rescale it).
//
// Note [bit-exact arithmetic]
//   Every element is computed with the same sequence of IEEE float operations on every
//   path (portable, AVX2, AVX-512, CUDA), built with FMA contraction off. The L1 sum uses 32
//   double-precision lanes (lane = i % 32, each summed in index order) combined by a
//   fixed halving tree (lane i += lane i + w for w = 16, 8, 4, 2, 1), so the portable
//   and SIMD paths agree exactly; the GPU's reduction tree
//   differs and its scale agrees only to float rounding. Decode sums the W ranks'
//   +-s_w in rank order 0..W-1 starting from 0.0f, then divides by W (IEEE division).
//   sign(0) = +1 (bit packing cannot express 0; the reference code's torch.sign gives 0).
//   "The same bytes" holds for every result that is not a NaN (±0, subnormals and ±Inf
//   included). Where a result is NaN its sign and payload may differ between paths (x86
//   picks the first NaN operand; the paths order some operands differently): a NaN
//   scale makes every rank skip the step anyway (Note [non-finite]).
//
// Note [non-finite]
//   A NaN or Inf anywhere in a layer's p makes its L1 sum, hence its scale, non-finite
//   (with ScaleMode::kFixed the scale is set to NaN for the same reason). The scale
//   travels in the message, so after the exchange every rank sees every rank's
//   verdict for every layer and all can skip the step together, with no extra
//   collective (DistributedOptimizer, --on-nonfinite).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "efsign/layer_table.h"
#include "efsign/span.h"

namespace efsign::codec {

// The CPU codec's paths; all give the same bytes (NaN bits aside: Note [bit-exact
// arithmetic]). AVX-512 needs only AVX512F.
enum class Isa { kPortable, kAvx2, kAvx512 };

// The default path: avx2 if this CPU has it (also where it has AVX-512: from memory,
// AVX2 measured faster), else avx512, else portable. EFSIGN_ISA=avx512 | avx2 | portable
// in the environment chooses instead (a UsageError if unknown or unsupported).
Isa best_isa();
bool isa_available(Isa isa);
const char* isa_name(Isa isa);
// "avx512" | "avx2" | "portable" -> Isa; a UsageError if unknown or not on this CPU.
Isa parse_isa(const std::string& name);

enum class ScaleMode { kMeanAbs, kFixed };

struct CompressParams {
  float lr = 0.0f;
  float weight_decay = 0.0f;
  float momentum = 0.0f;  // used only when LayerBuffers::momentum is non-empty
  ScaleMode scale_mode = ScaleMode::kMeanAbs;
  float fixed_scale = 0.0f;  // used only with ScaleMode::kFixed
};

struct LayerBuffers {
  Span<const float> grad;   // d elements, required
  Span<const float> param;  // d elements; required when weight_decay != 0
  Span<float> momentum;     // d elements, or empty for no momentum
  Span<float> state;        // d elements of EF state c (see Note), or empty for no EF
  float prev_scale = 0.0f;  // the scale returned for `state` at the previous step
  Span<uint32_t> words;     // ceil(d / 32) output words
};

// Compresses one layer; returns its scale (non-finite iff some p was: Note [non-finite]).
// Throws efsign::Error on size mismatches.
float compress_layer(const LayerBuffers& buf, const CompressParams& params, Isa isa);

// Packs bits (p >= 0) of p into ceil(d/32) words, tail bits 0.
void pack_signs(Span<const float> p, Span<uint32_t> words, Isa isa);

// e = c - s * sign(c): the error the stored state stands for.
void error_from_state(Span<const float> state, float scale, Span<float> error_out);

// Messages: `world` messages of table.message_words() uint32 each, back to back, as
// an allgather leaves them. Decodes layer `layer`:
//   decode_average:       out   = (1/W) * sum_w s_w * sign_w
//   decode_average_apply: param = param - (1/W) * sum_w s_w * sign_w
void decode_average(Span<const uint32_t> messages, int world, const LayerTable& table,
                    int64_t layer, Span<float> out, Isa isa);
void decode_average_apply(Span<const uint32_t> messages, int world, const LayerTable& table,
                          int64_t layer, Span<float> param, Isa isa);

// The general form behind both: `world` blocks placed `stride` words apart (a message
// array, an all-to-all's receive buffer, or one block with world = 1). Element i's bit
// is bit i % 32 of word word_offset + i / 32 of each block; block w's scale is the
// float at word scale_index of block w. inout has the n elements to decode.
void decode_blocks(Span<const uint32_t> blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                   Span<float> inout, bool apply, Isa isa);

// out = addend + (1/W) * sum_w s_w * sign_w over the same blocks, in one pass: the
// two-phase server's p = e + average (Note [two-phase] in exchange.h). addend and out
// have the same size and do not overlap (an Error otherwise).
void decode_add(Span<const uint32_t> blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                Span<const float> addend, Span<float> out, Isa isa);

// signSGD with majority vote (Bernstein et al., 2019) over the same blocks:
//   param = param - mean_w(s_w) * sign(sum_w sign_w)
// mean_w(s_w) = (s_0 + ... + s_{W-1}) / W in rank order. A tie (even W) leaves the
// element unchanged: the vote's sign(0) is 0, unlike the packing's sign(0) = +1, so
// that ties do not push every parameter the same way. Every Isa gives the same bytes.
void vote_apply(Span<const uint32_t> blocks, int world, int64_t stride, int64_t word_offset, int64_t scale_index,
                Span<float> param, Isa isa);

// A scale travels as the 32 bits of its float (little-endian on the wire).
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

}  // namespace efsign::codec
