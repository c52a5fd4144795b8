// kernels/sign_kernels.cu — the CUDA sign codec behind kernels/sign_kernels.h.
//
// Contract (per launcher, see the header for the maths):
//   * Every launcher is asynchronous on `stream`, checks its launches
//     (EFSIGN_CUDA_CHECK_LAUNCH) and throws efsign::Error on bad arguments.
//   * Per-element arithmetic is the CPU codec's (src/compress/sign_codec.cpp,
//     src/optim/sgdm_optimizer.cpp) written with __f*_rn intrinsics and built with
//     -fmad=false, so words, EF state, momentum and parameters are bit-exact.
//   * Layout: one block of kThreads per Chunk (a run of <= 256 words of one layer).
//     A warp handles a few consecutive words per step, lane i taking element
//     32*word + i, so every array access of a warp is one coalesced 128-byte line and
//     __ballot_sync yields the wire word directly (bit i = lane i).
//   * The L1 sum is reduced in a fixed order (per thread in index order, a shuffle
//     tree within a warp, warp order within a block; then the layer's chunk partials,
//     strided over the threads of one block, and the same trees): the same inputs give
//     the same scale on every run, whichever block of a layer finishes last.
//   * Pointers of a DeviceLayer may have any 4-byte alignment (layers of a flat buffer).
//   * The same file builds as host C++ against the CUDA emulation (efsign_kernels_emu,
//     kernels/cuda_device.h): kernels are launched with EFSIGN_LAUNCH, dynamic shared
//     memory is declared with EFSIGN_DYNAMIC_SHARED.
//
// Note [kernel memory pipeline]
//   Compress and decode are bound by memory bandwidth, which needs enough bytes in
//   flight per SM (H200: ~4.8 TB/s over 132 SMs at ~0.7 us latency, ~25 KB per SM).
//   So: (1) a block issues its first data loads right after it has read its chunk and
//   layer descriptors, before any barrier; (2) each warp loads the NEXT step's inputs
//   before the arithmetic of the current one (register double buffering), so a warp
//   never waits for a full round trip between steps; (3) __launch_bounds__ caps the
//   registers so that kMinBlocks blocks fit on an SM; (4) decode fetches the words of
//   up to kDecodeRanksPerLoad ranks for a step with ONE load per lane (lane j: rank
//   j / kDecodeWords, word j % kDecodeWords) and hands each lane its bits with a 32x32
//   bit transpose in five shuffles, instead of one dependent load per rank; (5) the
//   per-layer scale is finished by the layer's last block (an arrival counter per
//   layer), not by a second launch.
#include "sign_kernels.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda_check.h"
#include "cuda_device.h"
#include "efsign/error.h"

namespace efsign::kernels {
#if defined(EFSIGN_CUDA_EMULATION)
inline namespace emulated {
#endif

ChunkPlan ChunkPlan::build(const std::vector<int64_t>& layer_sizes) {
  ChunkPlan plan;
  plan.layer_first_chunk.reserve(layer_sizes.size() + 1);
  for (std::size_t l = 0; l < layer_sizes.size(); ++l) {
    const int64_t n = layer_sizes[l];
    if (n < 0) throw Error("ChunkPlan::build: layer " + std::to_string(l) + " has a negative size");
    plan.layer_first_chunk.push_back(static_cast<int32_t>(plan.chunks.size()));
    const int64_t words = (n + 31) / 32;
    int64_t w = 0;
    do {  // at least one chunk per layer, of zero words when the layer is empty
      plan.chunks.push_back(Chunk{static_cast<int32_t>(l), w, std::min(kWordsPerChunk, words - w)});
      w += kWordsPerChunk;
    } while (w < words);
    if (plan.chunks.size() > static_cast<std::size_t>(INT32_MAX))
      throw Error("ChunkPlan::build: more than 2^31 - 1 chunks");
  }
  plan.layer_first_chunk.push_back(static_cast<int32_t>(plan.chunks.size()));
  return plan;
}

namespace {

constexpr int kThreads = 256;  // 8 warps per block
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Compress: words per warp per step, and the blocks an SM must hold (Note [kernel
// memory pipeline]): 5 x 256 threads leave 48 registers per thread, which both
// instantiations use without spilling (ptxas -v, sm_90).
constexpr int kCompressWords = 4;
constexpr int kCompressMinBlocks = 5;
// Decode: words per warp per step; one load per lane then covers 32 / 4 = 8 ranks.
constexpr int kDecodeWords = 4;
constexpr int kDecodeRanksPerLoad = 32 / kDecodeWords;
constexpr int kDecodeMinBlocks = 5;

static_assert(kMaxDecodeWorld + 1 <= 48 * 1024 / static_cast<int>(sizeof(float)),
              "decode keeps world + 1 floats in the default 48 KiB of dynamic shared memory");

// Sums v over the block in a fixed order; the result is valid in thread 0 only. Every
// thread must call it; scratch (kWarps doubles of shared memory) must not be read by
// anyone until the next __syncthreads after the call.
__device__ double block_sum(double v, double* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullMask, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

// Elements [begin, end) of a chunk's layer.
struct ChunkRange {
  int64_t begin, end;
};
__device__ ChunkRange chunk_range(const Chunk& chunk, const DeviceLayer& layer) {
  const int64_t begin = chunk.first_word * 32;
  return {begin, min(layer.n, begin + chunk.num_words * 32)};
}

// ---- compress

// One step's inputs of one thread: element (base + k) * 32 + lane of the chunk.
struct CompressInputs {
  float g[kCompressWords], x[kCompressWords], m[kCompressWords], c[kCompressWords];
};

// Loads a step's inputs; elements at or past `count` read nothing (and are zero).
template <bool kWd, bool kMom, bool kEf>
__device__ __forceinline__ void load_compress_inputs(CompressInputs& in, const float* __restrict__ grad,
                                                     const float* __restrict__ param,
                                                     const float* __restrict__ momentum,
                                                     const float* __restrict__ state, int base, int count, int lane) {
#pragma unroll
  for (int k = 0; k < kCompressWords; ++k) {
    const int off = (base + k) * 32 + lane;
    const bool ok = off < count;
    in.g[k] = ok ? __ldg(grad + off) : 0.0f;
    in.x[k] = kWd && ok ? __ldg(param + off) : 0.0f;
    in.m[k] = kMom && ok ? momentum[off] : 0.0f;  // momentum and state are written here:
    in.c[k] = kEf && ok ? state[off] : 0.0f;      // no read-only (__ldg) path
  }
}

// One chunk of `count` elements (`num_words` words) from chunk-relative pointers;
// returns this thread's sum of |p| (its elements in index order).
template <bool kWd, bool kMom, bool kEf>
__device__ __forceinline__ double compress_chunk(const float* __restrict__ grad, const float* __restrict__ param,
                                                 float* __restrict__ momentum, float* __restrict__ state,
                                                 uint32_t* __restrict__ words, int num_words, int count,
                                                 const codec::CompressParams& params, float s_prev) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int kStep = kWarps * kCompressWords;  // words per block per step
  // Momentum AND EF state together (no optimizer uses both) would need four streams
  // double-buffered, 32 registers: that combination loads each step as it begins, so
  // that the kernel fits kCompressMinBlocks blocks per SM without spilling.
  constexpr bool kPrefetch = !(kMom && kEf);
  const float lr = params.lr, wd = params.weight_decay, beta = params.momentum;
  double l1 = 0.0;
  int base = warp * kCompressWords;
  CompressInputs cur;
  load_compress_inputs<kWd, kMom, kEf>(cur, grad, param, momentum, state, base, count, lane);
  for (; base < num_words; base += kStep) {  // warp-uniform
    CompressInputs next;  // in flight during this step's arithmetic
    if (kPrefetch) load_compress_inputs<kWd, kMom, kEf>(next, grad, param, momentum, state, base + kStep, count, lane);
#pragma unroll
    for (int k = 0; k < kCompressWords; ++k) {
      const int off = (base + k) * 32 + lane;
      const bool ok = off < count;
      float g = cur.g[k];
      if (kWd) g = __fadd_rn(g, __fmul_rn(wd, cur.x[k]));
      if (kMom) {
        g = __fadd_rn(__fmul_rn(beta, cur.m[k]), g);
        if (ok) momentum[off] = g;
      }
      float p = __fmul_rn(lr, g);
      if (kEf) {
        const float c = cur.c[k];
        p = __fadd_rn(__fsub_rn(c, c >= 0.0f ? s_prev : -s_prev), p);
        if (ok) state[off] = p;
      }
      const uint32_t bits = __ballot_sync(kFullMask, ok && p >= 0.0f);  // tail bits 0
      if (ok) l1 += static_cast<double>(fabsf(p));
      if (lane == 0 && base + k < num_words) words[base + k] = bits;
    }
    if (kPrefetch)
      cur = next;
    else
      load_compress_inputs<kWd, kMom, kEf>(cur, grad, param, momentum, state, base + kStep, count, lane);
  }
  return l1;
}

// One block per chunk: the chunk's words, EF state and momentum, its L1 partial in
// partials[chunk]; the layer's last block to arrive writes the layer's scale.
template <bool kWd>
__global__ void __launch_bounds__(kThreads, kCompressMinBlocks)
    compress_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                    const int32_t* __restrict__ layer_first_chunk, codec::CompressParams params,
                    float* __restrict__ prev_scales, double* __restrict__ partials, uint32_t* __restrict__ counters,
                    uint32_t* __restrict__ message) {
  __shared__ double warp_sums[kWarps];
  __shared__ int last_block;
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const ChunkRange r = chunk_range(chunk, layer);
  const int num_words = static_cast<int>(chunk.num_words);
  const int count = static_cast<int>(r.end - r.begin);
  // A layer without a gradient (grad == nullptr, n > 0) is left alone: zero words,
  // scale 0, its momentum, state and previous scale untouched (codec.h: a skipped layer).
  const bool absent = layer.grad == nullptr && layer.n > 0;
  uint32_t* words = message + layer.word_offset + chunk.first_word;
  double l1 = 0.0;  // block-uniform dispatch on the optional buffers
  if (absent) {
    for (int w = static_cast<int>(threadIdx.x); w < num_words; w += kThreads) words[w] = 0u;
  } else {
    // Read before this block's arrival is counted, so before the last block rewrites it.
    const float s_prev = layer.state ? prev_scales[chunk.layer] : 0.0f;
    const float* grad = layer.grad + r.begin;
    const float* param = kWd ? layer.param + r.begin : nullptr;
    float* momentum = layer.momentum ? layer.momentum + r.begin : nullptr;
    float* state = layer.state ? layer.state + r.begin : nullptr;
    if (state && momentum)
      l1 = compress_chunk<kWd, true, true>(grad, param, momentum, state, words, num_words, count, params, s_prev);
    else if (state)
      l1 = compress_chunk<kWd, false, true>(grad, param, momentum, state, words, num_words, count, params, s_prev);
    else if (momentum)
      l1 = compress_chunk<kWd, true, false>(grad, param, momentum, state, words, num_words, count, params, s_prev);
    else
      l1 = compress_chunk<kWd, false, false>(grad, param, momentum, state, words, num_words, count, params, s_prev);
  }

  const double chunk_l1 = block_sum(l1, warp_sums);
  const int32_t first_chunk = layer_first_chunk[chunk.layer];
  const int32_t layer_chunks = layer_first_chunk[chunk.layer + 1] - first_chunk;
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = chunk_l1;
    __threadfence();  // the partial is visible to every block before the arrival counts
    // atomicInc wraps to 0 after layer_chunks - 1: the last arrival resets the counter.
    const uint32_t limit = static_cast<uint32_t>(layer_chunks - 1);
    last_block = atomicInc(counters + chunk.layer, limit) == limit;
  }
  __syncthreads();
  if (!last_block) return;

  // The layer's last block: the sum of its chunks' partials in chunk order (fixed,
  // whichever block this is), then the scale.
  __threadfence();
  double sum = 0.0;
  for (int i = static_cast<int>(threadIdx.x); i < layer_chunks; i += kThreads)
    sum += __ldcg(partials + first_chunk + i);  // L2: written by other blocks
  const double total = block_sum(sum, warp_sums);
  if (threadIdx.x == 0 && absent) {
    message[layer.scale_index] = 0u;  // +0.0f; prev_scales keeps the scale the state was sent with
  } else if (threadIdx.x == 0) {
    float scale;
    if (params.scale_mode == codec::ScaleMode::kFixed)  // Note [non-finite]: a poisoned layer sends NaN
      scale = isfinite(total) ? params.fixed_scale : __int_as_float(0x7fc00000);
    else
      scale = layer.n > 0 ? __double2float_rn(total / static_cast<double>(layer.n)) : 0.0f;
    message[layer.scale_index] = __float_as_uint(scale);
    prev_scales[chunk.layer] = scale;
  }
}

// ---- decode

// The 32x32 bit matrix whose row i is lane i's x (bit j = column j), transposed:
// returns, in lane i, the word whose bit j is bit i of lane j's x. Every lane must call.
__device__ __forceinline__ uint32_t transpose32(uint32_t x, int lane) {
  uint32_t m = 0x0000ffffu;  // the low columns of each 2j-wide group
#pragma unroll
  for (int j = 16; j != 0; j >>= 1, m ^= m << j) {
    const uint32_t y = __shfl_xor_sync(kFullMask, x, j);
    x = (lane & j) ? ((x & ~m) | ((y >> j) & m)) : ((x & m) | ((y & m) << j));
  }
  return x;
}

// Lane j's word of rank group `group` for the step at `base`: rank
// group * kDecodeRanksPerLoad + j / kDecodeWords, word base + j % kDecodeWords.
__device__ __forceinline__ uint32_t load_rank_word(const uint32_t* __restrict__ words, int64_t stride, int world,
                                                   int num_words, int base, int group, int lane) {
  const int w = group * kDecodeRanksPerLoad + lane / kDecodeWords;
  const int word = base + lane % kDecodeWords;
  return w < world && word < num_words ? __ldg(words + w * stride + word) : 0u;
}

template <DecodeMode kMode>
__device__ __forceinline__ void load_decode_inputs(float (&x)[kDecodeWords], const float* __restrict__ in, int base,
                                                   int count, int lane) {
#pragma unroll
  for (int k = 0; k < kDecodeWords; ++k) {
    const int off = (base + k) * 32 + lane;
    x[k] = off >= count ? 0.0f : kMode == DecodeMode::kAdd ? __ldg(in + off) : in[off];  // kApply/kVote: written here
  }
}

// One block per chunk. Dynamic shared memory: world + 1 floats (every rank's scale of
// the chunk's layer; kVote: then their mean).
template <DecodeMode kMode>
__global__ void __launch_bounds__(kThreads, kDecodeMinBlocks)
    decode_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                  const uint32_t* __restrict__ blocks, int world, int64_t stride) {
  EFSIGN_DYNAMIC_SHARED(float, scales);
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const ChunkRange r = chunk_range(chunk, layer);
  const int num_words = static_cast<int>(chunk.num_words);
  const int count = static_cast<int>(r.end - r.begin);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int kStep = kWarps * kDecodeWords;
  const uint32_t* words = blocks + layer.word_offset + chunk.first_word;  // rank 0's words of the chunk
  const float* in = (kMode == DecodeMode::kAdd ? layer.grad : layer.param) + r.begin;
  float* out = layer.param + r.begin;

  for (int w = static_cast<int>(threadIdx.x); w < world; w += kThreads)
    scales[w] = __uint_as_float(__ldg(blocks + w * stride + layer.scale_index));
  // This warp's first step goes out before the barrier (Note [kernel memory pipeline]).
  int base = warp * kDecodeWords;
  uint32_t word = load_rank_word(words, stride, world, num_words, base, 0, lane);
  float x[kDecodeWords];
  load_decode_inputs<kMode>(x, in, base, count, lane);
  __syncthreads();
  if (kMode == DecodeMode::kVote) {
    if (threadIdx.x == 0) {  // codec::vote_apply: the scales in rank order from 0.0f, then / W
      float sum = 0.0f;
      for (int w = 0; w < world; ++w) sum = __fadd_rn(sum, scales[w]);
      scales[world] = __fdiv_rn(sum, static_cast<float>(world));
    }
    __syncthreads();
  }
  const float mean = kMode == DecodeMode::kVote ? scales[world] : 0.0f;
  const float wf = static_cast<float>(world);
  const int groups = (world + kDecodeRanksPerLoad - 1) / kDecodeRanksPerLoad;

  for (; base < num_words; base += kStep) {  // warp-uniform
    float x_next[kDecodeWords];  // in flight during this step's arithmetic
    load_decode_inputs<kMode>(x_next, in, base + kStep, count, lane);
    float acc[kDecodeWords];
    int margin[kDecodeWords];
#pragma unroll
    for (int k = 0; k < kDecodeWords; ++k) {
      acc[k] = 0.0f;
      margin[k] = 0;
    }
    for (int group = 0; group < groups; ++group) {  // ranks in order 0..W-1
      const uint32_t next_word = group + 1 < groups
                                     ? load_rank_word(words, stride, world, num_words, base, group + 1, lane)
                                     : load_rank_word(words, stride, world, num_words, base + kStep, 0, lane);
      const uint32_t bits = transpose32(word, lane);  // bit j: this lane's element of lane j's word
#pragma unroll
      for (int rr = 0; rr < kDecodeRanksPerLoad; ++rr) {
        const int w = group * kDecodeRanksPerLoad + rr;
        if (w >= world) break;
        const float s = kMode == DecodeMode::kVote ? 0.0f : scales[w];
#pragma unroll
        for (int k = 0; k < kDecodeWords; ++k) {
          const bool positive = (bits >> (rr * kDecodeWords + k)) & 1u;
          if (kMode == DecodeMode::kVote)
            margin[k] += positive ? 1 : -1;
          else
            acc[k] = __fadd_rn(acc[k], positive ? s : -s);
        }
      }
      word = next_word;
    }
#pragma unroll
    for (int k = 0; k < kDecodeWords; ++k) {
      const int off = (base + k) * 32 + lane;
      if (off >= count) continue;
      if (kMode == DecodeMode::kApply) {
        out[off] = __fsub_rn(x[k], __fdiv_rn(acc[k], wf));
      } else if (kMode == DecodeMode::kAdd) {
        out[off] = __fadd_rn(x[k], __fdiv_rn(acc[k], wf));
      } else {  // a tie subtracts 0.0f: x unchanged, as vote_apply
        const float step = margin[k] > 0 ? mean : margin[k] < 0 ? -mean : 0.0f;
        out[off] = __fsub_rn(x[k], step);
      }
    }
#pragma unroll
    for (int k = 0; k < kDecodeWords; ++k) x[k] = x_next[k];
  }
}

// ---- element-wise kernels

// One block per chunk: param[i] = grad[i] - (grad[i] >= 0 ? s : -s), s = the layer's
// scale (codec::error_from_state: the two-phase server's e' = p - s sign(p)).
__global__ void __launch_bounds__(kThreads)
    error_from_state_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                            const uint32_t* __restrict__ scale_words) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const ChunkRange r = chunk_range(chunk, layer);
  const float s = __uint_as_float(__ldg(scale_words + layer.scale_index));
  const float* __restrict__ p = layer.grad;
  float* __restrict__ e = layer.param;
#pragma unroll 4
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
    const float c = __ldg(p + i);
    e[i] = __fsub_rn(c, c >= 0.0f ? s : -s);
  }
}

__global__ void __launch_bounds__(kThreads)
    gather_u32_kernel(const uint32_t* __restrict__ src, const int64_t* __restrict__ src_index,
                      uint32_t* __restrict__ dst, const int64_t* __restrict__ dst_index, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) dst[__ldg(dst_index + i)] = __ldg(src + __ldg(src_index + i));
}

// Adds 1 to *count for every thread that saw a non-finite value (*count is zeroed by
// the launcher first): non-zero iff some value is NaN or Inf.
__global__ void __launch_bounds__(kThreads)
    nonfinite_kernel(const float* __restrict__ data, int64_t n, uint32_t* __restrict__ count) {
  bool bad = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    bad = bad || !isfinite(__ldg(data + i));
  if (bad) atomicAdd(count, 1u);
}

__global__ void __launch_bounds__(kThreads)
    gather_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks, float* __restrict__ flat) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const ChunkRange r = chunk_range(chunk, layer);
  const float* __restrict__ grad = layer.grad;
  float* __restrict__ out = flat + layer.elem_offset;
  // The layer's presence (1, or 0 without a gradient: its elements are zeros), summed
  // over the ranks by the allreduce with the rest.
  if (chunk.first_word == 0 && threadIdx.x == 0) flat[layer.scale_index] = grad ? 1.0f : 0.0f;
  if (!grad) {
    for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) out[i] = 0.0f;
    return;
  }
#pragma unroll 4
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) out[i] = __ldg(grad + i);
}

__global__ void __launch_bounds__(kThreads)
    sgdm_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                const float* __restrict__ flat, float world, float lr, float wd, float beta) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const ChunkRange r = chunk_range(chunk, layer);
  if (__ldg(flat + layer.scale_index) == 0.0f) return;  // no rank had a gradient: skipped
  const float* __restrict__ g = flat + layer.elem_offset;
  float* __restrict__ x = layer.param;
  float* __restrict__ m = layer.momentum;
#pragma unroll 4
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) {
    const float xi = x[i];
    float gi = __fdiv_rn(__ldg(g + i), world);
    gi = __fadd_rn(gi, __fmul_rn(wd, xi));
    const float mi = __fadd_rn(__fmul_rn(beta, m[i]), gi);
    m[i] = mi;
    x[i] = __fsub_rn(xi, __fmul_rn(lr, mi));
  }
}

// Copy kernels: each thread moves kCopyIlp items, all loads before all stores.
constexpr int kCopyIlp = 4;

template <typename T>
__global__ void __launch_bounds__(kThreads) copy_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t n) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * (kThreads * kCopyIlp) + threadIdx.x;
  T v[kCopyIlp];
#pragma unroll
  for (int k = 0; k < kCopyIlp; ++k)
    if (base + k * kThreads < n) v[k] = src[base + k * kThreads];
#pragma unroll
  for (int k = 0; k < kCopyIlp; ++k)
    if (base + k * kThreads < n) dst[base + k * kThreads] = v[k];
}

template <typename T>
void launch_copy(const T* src, T* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int64_t per_block = kThreads * kCopyIlp;
  const int64_t blocks = (n + per_block - 1) / per_block;
  if (blocks > INT32_MAX) throw Error("copy_launch: too many elements");
  EFSIGN_LAUNCH(copy_kernel<T>, static_cast<unsigned>(blocks), kThreads, 0, stream)(src, dst, n);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void check_counts(const char* who, int num_layers, int num_chunks) {
  if (num_layers < 0 || num_chunks < 0) throw Error(std::string(who) + ": negative layer or chunk count");
  if (num_chunks > 0 && num_layers == 0) throw Error(std::string(who) + ": chunks given without layers");
}

void require(bool ok, const char* who, const char* what) {
  if (!ok) throw Error(std::string(who) + ": " + what);
}

}  // namespace

void compress_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                     const int32_t* d_layer_first_chunk, const codec::CompressParams& params, float* d_prev_scales,
                     double* d_partials, uint32_t* d_counters, uint32_t* d_message, cudaStream_t stream) {
  const char* who = "compress_launch";
  check_counts(who, num_layers, num_chunks);
  if (num_layers == 0) return;
  require(num_chunks >= num_layers, who, "fewer chunks than layers (every layer needs one: ChunkPlan::build)");
  require(d_layers && d_chunks && d_layer_first_chunk && d_prev_scales && d_partials && d_counters && d_message, who,
          "a device pointer is null");
  if (params.weight_decay != 0.0f) {
    EFSIGN_LAUNCH(compress_kernel<true>, num_chunks, kThreads, 0, stream)(
        d_layers, d_chunks, d_layer_first_chunk, params, d_prev_scales, d_partials, d_counters, d_message);
  } else {
    EFSIGN_LAUNCH(compress_kernel<false>, num_chunks, kThreads, 0, stream)(
        d_layers, d_chunks, d_layer_first_chunk, params, d_prev_scales, d_partials, d_counters, d_message);
  }
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void decode_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                   const uint32_t* d_blocks, int world, int64_t stride, DecodeMode mode, cudaStream_t stream) {
  const char* who = "decode_launch";
  check_counts(who, num_layers, num_chunks);
  if (world < 1 || world > kMaxDecodeWorld)
    throw Error(std::string(who) + ": world size " + std::to_string(world) + " is outside [1, " +
                std::to_string(kMaxDecodeWorld) + "]");
  require(stride >= 0, who, "negative stride");
  if (num_chunks == 0) return;
  require(d_layers && d_chunks && d_blocks, who, "a device pointer is null");
  const size_t shared = (static_cast<size_t>(world) + 1) * sizeof(float);
  switch (mode) {
    case DecodeMode::kApply:
      EFSIGN_LAUNCH(decode_kernel<DecodeMode::kApply>, num_chunks, kThreads, shared, stream)(d_layers, d_chunks,
                                                                                            d_blocks, world, stride);
      break;
    case DecodeMode::kAdd:
      EFSIGN_LAUNCH(decode_kernel<DecodeMode::kAdd>, num_chunks, kThreads, shared, stream)(d_layers, d_chunks,
                                                                                          d_blocks, world, stride);
      break;
    case DecodeMode::kVote:
      EFSIGN_LAUNCH(decode_kernel<DecodeMode::kVote>, num_chunks, kThreads, shared, stream)(d_layers, d_chunks,
                                                                                           d_blocks, world, stride);
      break;
    default: throw Error(std::string(who) + ": unknown DecodeMode");
  }
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void error_from_state_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                             const uint32_t* d_scale_words, cudaStream_t stream) {
  const char* who = "error_from_state_launch";
  check_counts(who, num_layers, num_chunks);
  if (num_chunks == 0) return;
  require(d_layers && d_chunks && d_scale_words, who, "a device pointer is null");
  EFSIGN_LAUNCH(error_from_state_kernel, num_chunks, kThreads, 0, stream)(d_layers, d_chunks, d_scale_words);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void gather_u32_launch(const uint32_t* d_src, const int64_t* d_src_index, uint32_t* d_dst,
                       const int64_t* d_dst_index, int64_t n, cudaStream_t stream) {
  if (n < 0) throw Error("gather_u32_launch: negative count");
  if (n == 0) return;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > INT32_MAX) throw Error("gather_u32_launch: too many elements");
  EFSIGN_LAUNCH(gather_u32_kernel, static_cast<unsigned>(blocks), kThreads, 0, stream)(d_src, d_src_index, d_dst,
                                                                                       d_dst_index, n);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void nonfinite_count_launch(const float* d_data, int64_t n, uint32_t* d_count, cudaStream_t stream) {
  if (n < 0) throw Error("nonfinite_count_launch: negative count");
  EFSIGN_CUDA_CHECK(cudaMemsetAsync(d_count, 0, sizeof(uint32_t), stream));
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 1024);
  EFSIGN_LAUNCH(nonfinite_kernel, static_cast<unsigned>(blocks), kThreads, 0, stream)(d_data, n, d_count);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void gather_grads_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                         float* d_flat, cudaStream_t stream) {
  check_counts("gather_grads_launch", num_layers, num_chunks);
  if (num_chunks == 0) return;
  EFSIGN_LAUNCH(gather_kernel, num_chunks, kThreads, 0, stream)(d_layers, d_chunks, d_flat);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void sgdm_update_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                        const float* d_flat, int world, float lr, float weight_decay, float momentum,
                        cudaStream_t stream) {
  check_counts("sgdm_update_launch", num_layers, num_chunks);
  if (world < 1) throw Error("sgdm_update_launch: world size must be >= 1");
  if (num_chunks == 0) return;
  EFSIGN_LAUNCH(sgdm_kernel, num_chunks, kThreads, 0, stream)(d_layers, d_chunks, d_flat, static_cast<float>(world),
                                                              lr, weight_decay, momentum);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void copy_launch(const float* src, float* dst, int64_t n, cudaStream_t stream) {
  if (n < 0) throw Error("copy_launch: negative element count");
  const bool aligned = ((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) & 15u) == 0;
  const int64_t n4 = aligned ? n / 4 : 0;
  launch_copy(reinterpret_cast<const float4*>(src), reinterpret_cast<float4*>(dst), n4, stream);
  launch_copy(src + 4 * n4, dst + 4 * n4, n - 4 * n4, stream);
}

#if defined(EFSIGN_CUDA_EMULATION)
}  // inline namespace emulated
#endif
}  // namespace efsign::kernels
