// kernels/sign_kernels.h — launchers for the CUDA sign codec. Plain C++: host code
// includes this without nvcc. No LibTorch inside: raw device pointers + a stream.
//
// Every kernel has a CPU twin in efsign/sign_codec.h, which is its specification:
// the same IEEE float operations per element (written with __fmul_rn/__fadd_rn/
// __fsub_rn/__fdiv_rn so that no FMA contraction can happen), the same wire format
// (Note [wire format] in efsign/layer_table.h). Words, EF state, momentum and
// parameters come out bit-exact for the same inputs; only the per-layer L1 sum uses a
// different (but fixed, hence run-to-run deterministic) reduction order, so scales
// agree to float rounding, and bit for bit when every partial sum is exact (small
// integers, powers of two).
//
// Work is split into chunks that never cross a layer boundary (ChunkPlan), so one
// launch covers ALL layers (or segments) of a step and every block knows its layer.
// Every launcher is asynchronous on its `stream` (0 is the legacy default stream,
// only when the caller passes it), checks its launches and throws efsign::Error on
// bad arguments; with nothing to do it launches nothing.
//
// Built by nvcc for the GPU (efsign_kernels) and, from the same source, as host C++
// against the CUDA emulation (efsign_kernels_emu; Note [CUDA emulation] in
// kernels/emu/cuda_runtime_api.h). The emulated build's symbols live in the inline
// namespace `emulated`, so that the two can never be mixed in one binary.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "efsign/sign_codec.h"

namespace efsign::kernels {
#if defined(EFSIGN_CUDA_EMULATION)
inline namespace emulated {
#endif

// One layer, or one segment of a layer (the two-phase server's chunks), as device
// pointers. Unused pointers are nullptr. Pointers need only 4-byte alignment.
struct DeviceLayer {
  const float* grad = nullptr;  // compress: the gradient (or p on the two-phase server);
                                // decode kAdd: the addend; error_from_state: p
  float* param = nullptr;       // compress: read for weight decay; decode kApply/kVote:
                                // updated in place; kAdd: the output; error_from_state: e
  float* momentum = nullptr;    // compress only, or nullptr
  float* state = nullptr;       // compress only: EF state c (Note [error state as p]), or nullptr
  int64_t n = 0;                // elements
  int64_t word_offset = 0;      // first word of this layer inside a block (message)
  int64_t scale_index = 0;      // word index of this layer's scale inside a block (message)
  int64_t elem_offset = 0;      // sgdm: first element in the flat fp32 buffer
};

// A contiguous run of words inside one layer, handled by one thread block.
struct Chunk {
  int32_t layer = 0;
  int64_t first_word = 0;  // relative to the layer's start
  int64_t num_words = 0;
};

// Host-side plan: chunks of at most kWordsPerChunk words, layer by layer, and for
// each layer the range [layer_first_chunk[l], layer_first_chunk[l + 1]) of its chunks.
// Every layer has at least one chunk: an empty layer gets one chunk of zero words, so
// that compress writes its scale (0, or the fixed scale). Built once per layer table.
struct ChunkPlan {
  static constexpr int64_t kWordsPerChunk = 256;  // 8192 elements per block
  std::vector<Chunk> chunks;
  std::vector<int32_t> layer_first_chunk;  // size L + 1
  static ChunkPlan build(const std::vector<int64_t>& layer_sizes);
};

// What decode_launch does with the average a = (1/W) * sum_w s_w * sign_w (see there).
enum class DecodeMode { kApply, kAdd, kVote };

// Fused compress over every layer, one pass over memory, one launch (a layer whose
// grad is nullptr is skipped: zero words, scale +0, momentum, state and its
// prev_scales entry untouched):
//   per element: g = grad + wd*x; [m = beta*m + g; g = m]; d = lr*g;
//                [e = c - s_prev*sign(c); p = e + d; c = p] (else p = d)
//   words -> d_message + layer.word_offset (bit = p >= 0, tail bits 0);
//   scale bits -> d_message[layer.scale_index]; d_prev_scales[l] is read as s_prev
//   (layers with state) and overwritten with the new scale.
// Scale (params.scale_mode): kMeanAbs -> L1/n (0 for n == 0); kFixed ->
// params.fixed_scale. A non-finite p makes the scale non-finite (kFixed: NaN), Note
// [non-finite]. Weight decay reads param when params.weight_decay != 0; momentum uses
// params.momentum where layer.momentum is set.
// Each layer's last block to finish sums the layer's chunk partials (d_partials, one
// double per chunk) in a fixed order and writes the scale: d_counters holds one
// arrival counter per layer, which must be zero before the FIRST launch (cudaMemset
// once); every launch leaves it zero again. d_layer_first_chunk is the plan's
// layer_first_chunk (L + 1 entries) on the device. d_partials and d_counters are
// workspaces: launches that may run at the same time (other streams) need their own.
void compress_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                     const int32_t* d_layer_first_chunk, const codec::CompressParams& params, float* d_prev_scales,
                     double* d_partials, uint32_t* d_counters, uint32_t* d_message, cudaStream_t stream);

// `world` blocks placed `stride` words apart (an allgather's messages, an all-to-all's
// receive buffer, one block with world = 1): block w's words of layer l at
// d_blocks + w*stride + layer.word_offset, its scale (float bits) at
// d_blocks[w*stride + layer.scale_index].
//   kApply: param -= (1/W) * sum_{w=0..W-1} s_w*sign_w   (sum from 0.0f in rank order,
//           then IEEE divide by W: codec::decode_blocks(apply = true))
//   kAdd:   param = grad + (1/W) * sum ...  (codec::decode_add; grad and param must not overlap)
//   kVote:  param -= mean_w(s_w) * sign(sum_w sign_w); a tie leaves x (codec::vote_apply)
// 1 <= world <= kMaxDecodeWorld (the block keeps world + 1 floats in shared memory;
// allgather stops paying off long before, at W ~ 64: docs/architecture.md).
constexpr int kMaxDecodeWorld = 8192;
void decode_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                   const uint32_t* d_blocks, int world, int64_t stride, DecodeMode mode, cudaStream_t stream);

// codec::error_from_state per layer: param[i] = grad[i] - (grad[i] >= 0 ? s : -s),
// s = the float whose bits are d_scale_words[layer.scale_index] (grad holds p, param
// receives the error).
void error_from_state_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                             const uint32_t* d_scale_words, cudaStream_t stream);

// dst[dst_index[i]] = src[src_index[i]] for i < n: the two-phase blocks from a message,
// the verdict's scales from the received blocks (codec.h's CopyRuns, expanded).
void gather_u32_launch(const uint32_t* d_src, const int64_t* d_src_index, uint32_t* d_dst,
                       const int64_t* d_dst_index, int64_t n, cudaStream_t stream);

// *d_count = 0, then non-zero iff one of the n floats at d_data is NaN or Inf.
void nonfinite_count_launch(const float* d_data, int64_t n, uint32_t* d_count, cudaStream_t stream);

// sgdm: copy every layer's grad into one flat buffer at layer.elem_offset, and the
// layer's presence at flat[layer.scale_index]: 1, or 0 for a layer whose grad is
// nullptr (its elements are then zeros).
void gather_grads_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                         float* d_flat, cudaStream_t stream);
// sgdm after the allreduce: g = flat/W; g = g + wd*x; m = beta*m + g; x = x - lr*m,
// except for layers whose summed presence flat[layer.scale_index] is 0 (no rank had a
// gradient: skipped, as torch.optim.SGD skips a parameter without one).
void sgdm_update_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                        const float* d_flat, int world, float lr, float weight_decay, float momentum,
                        cudaStream_t stream);

// Reference bandwidth: dst = src over n floats (for the benchmark's ratio).
void copy_launch(const float* src, float* dst, int64_t n, cudaStream_t stream);

#if defined(EFSIGN_CUDA_EMULATION)
}  // inline namespace emulated
#endif
}  // namespace efsign::kernels
