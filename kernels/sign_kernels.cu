// kernels/sign_kernels.cu — the CUDA sign codec behind kernels/sign_kernels.h.
//
// Contract (per launcher, see the header for the maths):
//   * Every launcher is asynchronous on `stream`, checks its launches
//     (EFSIGN_CUDA_CHECK_LAUNCH) and throws efsign::Error on bad arguments.
//   * Per-element arithmetic is the CPU codec's (src/compress/sign_codec.cpp,
//     src/optim/sgdm_optimizer.cpp) written with __f*_rn intrinsics and built with
//     -fmad=false, so words, EF state, momentum and parameters are bit-exact.
//   * Layout: one block of kThreads per Chunk (a run of <= 256 words of one layer).
//     A warp handles kIlp consecutive words per iteration, lane i taking element
//     32*word + i, so every array access of a warp is one coalesced 128-byte line and
//     __ballot_sync yields the wire word directly (bit i = lane i).
//   * The L1 sum is reduced in a fixed order (lane order within a thread, shuffle tree
//     within a warp, warp order within a block, chunk-strided then tree in finalize):
//     the same inputs give the same scale on every run. No atomics anywhere.
//   * Pointers of a DeviceLayer may have any 4-byte alignment (layers of a flat buffer).
#include "sign_kernels.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda_check.h"
#include "efsign/error.h"

namespace efsign::kernels {

ChunkPlan ChunkPlan::build(const std::vector<int64_t>& layer_sizes) {
  ChunkPlan plan;
  plan.layer_first_chunk.reserve(layer_sizes.size() + 1);
  for (std::size_t l = 0; l < layer_sizes.size(); ++l) {
    const int64_t n = layer_sizes[l];
    if (n < 0) throw Error("ChunkPlan::build: layer " + std::to_string(l) + " has a negative size");
    plan.layer_first_chunk.push_back(static_cast<int32_t>(plan.chunks.size()));
    const int64_t words = (n + 31) / 32;
    for (int64_t w = 0; w < words; w += kWordsPerChunk)
      plan.chunks.push_back(Chunk{static_cast<int32_t>(l), w, std::min(kWordsPerChunk, words - w)});
    if (plan.chunks.size() > static_cast<std::size_t>(INT32_MAX))
      throw Error("ChunkPlan::build: more than 2^31 - 1 chunks");
  }
  plan.layer_first_chunk.push_back(static_cast<int32_t>(plan.chunks.size()));
  return plan;
}

namespace {

constexpr int kThreads = 256;  // 8 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int kIlp = 4;  // words per warp per iteration: independent loads in flight
constexpr unsigned kFullMask = 0xffffffffu;
// Dynamic shared memory a block may use without opting in: 48 KiB of W float scales.
constexpr int kMaxWorld = 48 * 1024 / static_cast<int>(sizeof(float));

// Sums v over the block in a fixed order; the result is valid in thread 0 only.
// Every thread of the block must call it.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kWarps];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullMask, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
  return total;
}

// Kernel A: one block per chunk. Writes the chunk's message words, EF state and
// momentum, and the chunk's L1 partial sum into partials[blockIdx.x].
__global__ void __launch_bounds__(kThreads)
    compress_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks, CompressConfig cfg,
                    const float* __restrict__ prev_scales, double* __restrict__ partials,
                    uint32_t* __restrict__ message) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const float* __restrict__ grad = layer.grad;
  const float* __restrict__ param = layer.param;
  float* __restrict__ momentum = layer.momentum;
  float* __restrict__ state = layer.state;
  const bool use_wd = cfg.weight_decay != 0.0f;
  const float s_prev = state ? prev_scales[chunk.layer] : 0.0f;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nw = static_cast<int>(chunk.num_words);
  uint32_t* __restrict__ out_words = message + layer.word_offset + chunk.first_word;

  double l1 = 0.0;
  for (int base = warp * kIlp; base < nw; base += kWarps * kIlp) {  // warp-uniform loop
    int64_t idx[kIlp];
    bool ok[kIlp];
    float g[kIlp], x[kIlp], m[kIlp], c[kIlp];
#pragma unroll
    for (int k = 0; k < kIlp; ++k) {
      idx[k] = (chunk.first_word + base + k) * 32 + lane;
      ok[k] = base + k < nw && idx[k] < layer.n;
    }
    // All loads first, so kIlp words per array are in flight together.
#pragma unroll
    for (int k = 0; k < kIlp; ++k) {
      g[k] = ok[k] ? __ldg(grad + idx[k]) : 0.0f;
      x[k] = use_wd && ok[k] ? __ldg(param + idx[k]) : 0.0f;
      m[k] = momentum && ok[k] ? momentum[idx[k]] : 0.0f;
      c[k] = state && ok[k] ? state[idx[k]] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kIlp; ++k) {
      float gk = g[k];
      if (use_wd) gk = __fadd_rn(gk, __fmul_rn(cfg.weight_decay, x[k]));
      if (momentum) {
        gk = __fadd_rn(__fmul_rn(cfg.momentum, m[k]), gk);
        if (ok[k]) momentum[idx[k]] = gk;
      }
      float p = __fmul_rn(cfg.lr, gk);
      if (state) {
        const float e = __fsub_rn(c[k], c[k] >= 0.0f ? s_prev : -s_prev);
        p = __fadd_rn(e, p);
        if (ok[k]) state[idx[k]] = p;
      }
      const uint32_t word = __ballot_sync(kFullMask, ok[k] && p >= 0.0f);  // tail bits 0
      if (ok[k]) l1 += static_cast<double>(fabsf(p));
      if (lane == 0 && base + k < nw) out_words[base + k] = word;
    }
  }
  const double total = block_sum(l1);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Kernel B: one block per layer. scale_l = fixed value, or (sum of the layer's chunk
// partials) / n_l, written to the message's scale array and to prev_scales.
__global__ void __launch_bounds__(kThreads)
    finalize_kernel(const DeviceLayer* __restrict__ layers, const int32_t* __restrict__ layer_first_chunk,
                    const double* __restrict__ partials, CompressConfig cfg, int64_t total_words,
                    float* __restrict__ prev_scales, uint32_t* __restrict__ message) {
  const int l = blockIdx.x;
  const int begin = layer_first_chunk[l], end = layer_first_chunk[l + 1];
  double sum = 0.0;
  for (int i = begin + static_cast<int>(threadIdx.x); i < end; i += kThreads) sum += partials[i];
  const double total = block_sum(sum);
  if (threadIdx.x == 0) {
    const int64_t n = layers[l].n;
    // Note [non-finite] (sign_codec.h): a layer with a non-finite p sends a non-finite scale.
    float scale = isfinite(total) ? cfg.fixed_scale_value : __int_as_float(0x7fc00000);
    if (!cfg.fixed_scale) scale = n > 0 ? static_cast<float>(total / static_cast<double>(n)) : 0.0f;
    message[total_words + l] = __float_as_uint(scale);
    prev_scales[l] = scale;
  }
}

// One block per chunk: param -= (1/W) sum_w s_w sign_w, ranks summed in order 0..W-1
// (kAdd: param += ..., the two-phase server's p = e + a).
// Dynamic shared memory: W floats (the chunk's layer's scale from every rank).
template <bool kAdd>
__global__ void __launch_bounds__(kThreads)
    decode_apply_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                        const uint32_t* __restrict__ messages, int world, int64_t message_words,
                        int64_t total_words) {
  extern __shared__ float scales[];
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  for (int w = threadIdx.x; w < world; w += kThreads)
    scales[w] = __uint_as_float(messages[w * message_words + total_words + chunk.layer]);
  __syncthreads();

  float* __restrict__ param = layer.param;
  const float wf = static_cast<float>(world);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nw = static_cast<int>(chunk.num_words);
  const uint32_t* __restrict__ words = messages + layer.word_offset + chunk.first_word;
  for (int base = warp * kIlp; base < nw; base += kWarps * kIlp) {
    int64_t idx[kIlp];
    bool ok[kIlp];
    float x[kIlp], acc[kIlp];
#pragma unroll
    for (int k = 0; k < kIlp; ++k) {
      idx[k] = (chunk.first_word + base + k) * 32 + lane;
      ok[k] = base + k < nw && idx[k] < layer.n;
      x[k] = ok[k] ? param[idx[k]] : 0.0f;
      acc[k] = 0.0f;
    }
    for (int w = 0; w < world; ++w) {
      const float s = scales[w];
      const uint32_t* __restrict__ mw = words + w * message_words + base;
      uint32_t bits[kIlp];
#pragma unroll
      for (int k = 0; k < kIlp; ++k) bits[k] = base + k < nw ? __ldg(mw + k) : 0u;  // warp-wide broadcast
#pragma unroll
      for (int k = 0; k < kIlp; ++k) acc[k] = __fadd_rn(acc[k], (bits[k] >> lane) & 1u ? s : -s);
    }
#pragma unroll
    for (int k = 0; k < kIlp; ++k)
      if (ok[k]) param[idx[k]] = kAdd ? __fadd_rn(x[k], __fdiv_rn(acc[k], wf)) : __fsub_rn(x[k], __fdiv_rn(acc[k], wf));
  }
}

// One block per chunk: majority vote (codec::vote_apply). margin = #(+) - #(-) over the
// ranks; mean = (s_0 + ... + s_{W-1}) / W in rank order; a tie leaves x alone.
__global__ void __launch_bounds__(kThreads)
    vote_apply_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                      const uint32_t* __restrict__ messages, int world, int64_t message_words, int64_t total_words) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  float sum = 0.0f;
  for (int w = 0; w < world; ++w)
    sum = __fadd_rn(sum, __uint_as_float(__ldg(messages + w * message_words + total_words + chunk.layer)));
  const float mean = __fdiv_rn(sum, static_cast<float>(world));
  const int64_t first = chunk.first_word * 32;
  const int64_t end = min(layer.n, first + chunk.num_words * 32);
  const uint32_t* __restrict__ words = messages + layer.word_offset;
  for (int64_t i = first + threadIdx.x; i < end; i += kThreads) {
    int margin = 0;
    for (int w = 0; w < world; ++w) margin += ((__ldg(words + w * message_words + (i >> 5)) >> (i & 31)) & 1u) ? 1 : -1;
    if (margin > 0) layer.param[i] = __fsub_rn(layer.param[i], mean);
    else if (margin < 0) layer.param[i] = __fadd_rn(layer.param[i], mean);
  }
}

// One block per chunk: param[i] = grad[i] - (grad[i] >= 0 ? s : -s), s = scales[layer]
// (codec::error_from_state: the two-phase server's e' = p - s sign(p)).
__global__ void __launch_bounds__(kThreads)
    error_from_state_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                            const float* __restrict__ scales) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const float s = scales[chunk.layer];
  const int64_t first = chunk.first_word * 32;
  const int64_t end = min(layer.n, first + chunk.num_words * 32);
  for (int64_t i = first + threadIdx.x; i < end; i += kThreads) {
    const float c = layer.grad[i];
    layer.param[i] = __fsub_rn(c, c >= 0.0f ? s : -s);
  }
}

__global__ void __launch_bounds__(kThreads)
    gather_u32_kernel(const uint32_t* __restrict__ src, const int64_t* __restrict__ idx, uint32_t* __restrict__ dst,
                      int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) dst[i] = __ldg(src + __ldg(idx + i));
}

// Elements [begin, end) of a chunk's layer.
struct ChunkRange {
  int64_t begin, end;
};
__device__ ChunkRange chunk_range(const Chunk& chunk, const DeviceLayer& layer) {
  const int64_t begin = chunk.first_word * 32;
  return {begin, min(layer.n, begin + chunk.num_words * 32)};
}

__global__ void __launch_bounds__(kThreads)
    gather_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks, float* __restrict__ flat) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const ChunkRange r = chunk_range(chunk, layer);
  const float* __restrict__ grad = layer.grad;
  float* __restrict__ out = flat + layer.elem_offset;
#pragma unroll 4
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += kThreads) out[i] = __ldg(grad + i);
}

__global__ void __launch_bounds__(kThreads)
    sgdm_kernel(const DeviceLayer* __restrict__ layers, const Chunk* __restrict__ chunks,
                const float* __restrict__ flat, float world, float lr, float wd, float beta) {
  const Chunk chunk = chunks[blockIdx.x];
  const DeviceLayer layer = layers[chunk.layer];
  const ChunkRange r = chunk_range(chunk, layer);
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
  copy_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(src, dst, n);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void check_counts(const char* who, int num_layers, int num_chunks) {
  if (num_layers < 0 || num_chunks < 0)
    throw Error(std::string(who) + ": negative layer or chunk count");
  if (num_chunks > 0 && num_layers == 0) throw Error(std::string(who) + ": chunks given without layers");
}

}  // namespace

void compress_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                     const int32_t* d_layer_first_chunk, int64_t total_words, const CompressConfig& config,
                     float* d_prev_scales, double* d_partials, uint32_t* d_message, cudaStream_t stream) {
  check_counts("compress_launch", num_layers, num_chunks);
  if (num_chunks > 0) {
    compress_kernel<<<num_chunks, kThreads, 0, stream>>>(d_layers, d_chunks, config, d_prev_scales, d_partials,
                                                         d_message);
    EFSIGN_CUDA_CHECK_LAUNCH();
  }
  // Also when every layer is empty: the message's scale array is still written.
  if (num_layers > 0) {
    finalize_kernel<<<num_layers, kThreads, 0, stream>>>(d_layers, d_layer_first_chunk, d_partials, config,
                                                         total_words, d_prev_scales, d_message);
    EFSIGN_CUDA_CHECK_LAUNCH();
  }
}

namespace {
void check_decode(const char* who, int num_layers, int num_chunks, int world, int64_t message_words,
                  int64_t total_words) {
  check_counts(who, num_layers, num_chunks);
  if (world < 1) throw Error(std::string(who) + ": world size must be >= 1");
  if (world > kMaxWorld)
    throw Error(std::string(who) + ": world size " + std::to_string(world) + " exceeds " + std::to_string(kMaxWorld));
  if (message_words < total_words + num_layers) throw Error(std::string(who) + ": message_words too small");
}
}  // namespace

void decode_apply_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                         const uint32_t* d_messages, int world, int64_t message_words, int64_t total_words,
                         cudaStream_t stream) {
  check_decode("decode_apply_launch", num_layers, num_chunks, world, message_words, total_words);
  if (num_chunks == 0) return;
  decode_apply_kernel<false><<<num_chunks, kThreads, world * sizeof(float), stream>>>(
      d_layers, d_chunks, d_messages, world, message_words, total_words);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void decode_add_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                       const uint32_t* d_messages, int world, int64_t message_words, int64_t total_words,
                       cudaStream_t stream) {
  check_decode("decode_add_launch", num_layers, num_chunks, world, message_words, total_words);
  if (num_chunks == 0) return;
  decode_apply_kernel<true><<<num_chunks, kThreads, world * sizeof(float), stream>>>(
      d_layers, d_chunks, d_messages, world, message_words, total_words);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void vote_apply_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                       const uint32_t* d_messages, int world, int64_t message_words, int64_t total_words,
                       cudaStream_t stream) {
  check_decode("vote_apply_launch", num_layers, num_chunks, world, message_words, total_words);
  if (num_chunks == 0) return;
  vote_apply_kernel<<<num_chunks, kThreads, 0, stream>>>(d_layers, d_chunks, d_messages, world, message_words,
                                                         total_words);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void error_from_state_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                             const float* d_scales, cudaStream_t stream) {
  check_counts("error_from_state_launch", num_layers, num_chunks);
  if (num_chunks == 0) return;
  error_from_state_kernel<<<num_chunks, kThreads, 0, stream>>>(d_layers, d_chunks, d_scales);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void gather_u32_launch(const uint32_t* d_src, const int64_t* d_index, uint32_t* d_dst, int64_t n,
                       cudaStream_t stream) {
  if (n < 0) throw Error("gather_u32_launch: negative count");
  if (n == 0) return;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > INT32_MAX) throw Error("gather_u32_launch: too many elements");
  gather_u32_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(d_src, d_index, d_dst, n);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void gather_grads_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                         float* d_flat, cudaStream_t stream) {
  check_counts("gather_grads_launch", num_layers, num_chunks);
  if (num_chunks == 0) return;
  gather_kernel<<<num_chunks, kThreads, 0, stream>>>(d_layers, d_chunks, d_flat);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void sgdm_update_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                        const float* d_flat, int world, float lr, float weight_decay, float momentum,
                        cudaStream_t stream) {
  check_counts("sgdm_update_launch", num_layers, num_chunks);
  if (world < 1) throw Error("sgdm_update_launch: world size must be >= 1");
  if (num_chunks == 0) return;
  sgdm_kernel<<<num_chunks, kThreads, 0, stream>>>(d_layers, d_chunks, d_flat, static_cast<float>(world), lr,
                                                   weight_decay, momentum);
  EFSIGN_CUDA_CHECK_LAUNCH();
}

void copy_launch(const float* src, float* dst, int64_t n, cudaStream_t stream) {
  if (n < 0) throw Error("copy_launch: negative element count");
  const bool aligned = ((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) & 15u) == 0;
  const int64_t n4 = aligned ? n / 4 : 0;
  launch_copy(reinterpret_cast<const float4*>(src), reinterpret_cast<float4*>(dst), n4, stream);
  launch_copy(src + 4 * n4, dst + 4 * n4, n - 4 * n4, stream);
}

}  // namespace efsign::kernels
