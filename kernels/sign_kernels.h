// kernels/sign_kernels.h — launchers for the CUDA sign codec. Plain C++: host code
// includes this without nvcc. No LibTorch inside: raw device pointers + a stream.
//
// Every kernel has a CPU twin in efsign/sign_codec.h, which is its specification:
// the same IEEE float operations per element (written with __fmul_rn/__fadd_rn/
// __fsub_rn/__fdiv_rn so that no FMA contraction can happen), the same wire format
// (Note [wire format] in efsign/layer_table.h). Words and EF state come out bit-exact
// for the same inputs; only the per-layer L1 sum uses a different (but fixed, hence
// run-to-run deterministic) reduction order, so scales agree to float rounding.
//
// Work is split into chunks that never cross a layer boundary (ChunkPlan), so one
// launch covers ALL layers of a step and every block knows its layer.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

namespace efsign::kernels {

// One parameter tensor, as device pointers. Unused pointers are nullptr.
struct DeviceLayer {
  const float* grad = nullptr;  // d elements (read)
  float* param = nullptr;       // d elements (read for weight decay; updated by decode/sgdm)
  float* momentum = nullptr;    // d elements or nullptr
  float* state = nullptr;       // d elements of EF state c (Note [error state as p]) or nullptr
  int64_t n = 0;                // d
  int64_t word_offset = 0;      // first word of this layer in a message
  int64_t elem_offset = 0;      // first element in a flat fp32 buffer (sgdm)
};

// A contiguous run of words inside one layer, handled by one thread block.
struct Chunk {
  int32_t layer = 0;
  int64_t first_word = 0;  // relative to the layer's start
  int64_t num_words = 0;
};

// Host-side plan: chunks of at most kWordsPerChunk words, layer by layer, and for
// each layer the range of its chunks. Built once per layer table.
struct ChunkPlan {
  static constexpr int64_t kWordsPerChunk = 256;  // 8192 elements per block
  std::vector<Chunk> chunks;
  std::vector<int32_t> layer_first_chunk;  // size L + 1
  static ChunkPlan build(const std::vector<int64_t>& layer_sizes);
};

struct CompressConfig {
  float lr = 0.0f;
  float weight_decay = 0.0f;  // 0: param is not read
  float momentum = 0.0f;      // used when DeviceLayer::momentum != nullptr
  bool fixed_scale = false;   // true: scale = fixed_scale_value (signum); false: L1/d
  float fixed_scale_value = 0.0f;
};

// Fused compress over every layer, one pass over memory, then a tiny finalize launch:
//   per element: g = grad + wd*x; [m = beta*m + g; g = m]; d = lr*g;
//                [e = c - s_prev*sign(c); p = e + d; c = p] (else p = d)
//   message words  <- bits (p >= 0), tail bits 0
//   message[total_words + l] <- scale_l (float bits), and prev_scales[l] <- scale_l
// d_layers: device array of L DeviceLayer; d_chunks: device array of the plan's chunks;
// d_layer_first_chunk: device array (L + 1); d_partials: device double[num_chunks]
// workspace; d_prev_scales: device float[L] (read as s_prev, then overwritten).
void compress_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                     const int32_t* d_layer_first_chunk, int64_t total_words, const CompressConfig& config,
                     float* d_prev_scales, double* d_partials, uint32_t* d_message, cudaStream_t stream);

// x -= (1/W) * sum_{w=0..W-1} s_w * sign_w for every layer, from W messages of
// message_words uint32 each (as allgather leaves them). Never expands signs to floats.
void decode_apply_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                         const uint32_t* d_messages, int world, int64_t message_words, int64_t total_words,
                         cudaStream_t stream);

// The same with param += instead of -= (the two-phase server: p = e + average).
void decode_add_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                       const uint32_t* d_messages, int world, int64_t message_words, int64_t total_words,
                       cudaStream_t stream);

// Majority vote (codec::vote_apply): x -= mean_w(s_w) * sign(sum_w sign_w); a tie
// leaves x unchanged. Same messages as decode_apply_launch.
void vote_apply_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                       const uint32_t* d_messages, int world, int64_t message_words, int64_t total_words,
                       cudaStream_t stream);

// codec::error_from_state per layer: param[i] = grad[i] - (grad[i] >= 0 ? s_l : -s_l),
// s_l = d_scales[l] (grad holds p, param receives the error).
void error_from_state_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                             const float* d_scales, cudaStream_t stream);

// dst[i] = src[index[i]] for i < n: builds the two-phase blocks from a message and
// the message-shaped array from the gathered blocks.
void gather_u32_launch(const uint32_t* d_src, const int64_t* d_index, uint32_t* d_dst, int64_t n,
                       cudaStream_t stream);

// sgdm: copy every layer's grad into one flat buffer (one launch for all layers).
void gather_grads_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                         float* d_flat, cudaStream_t stream);
// sgdm after the allreduce: g = flat/W; g = g + wd*x; m = beta*m + g; x = x - lr*m.
void sgdm_update_launch(const DeviceLayer* d_layers, int num_layers, const Chunk* d_chunks, int num_chunks,
                        const float* d_flat, int world, float lr, float weight_decay, float momentum,
                        cudaStream_t stream);

// Reference bandwidth: dst = src over n floats (for the benchmark's ratio).
void copy_launch(const float* src, float* dst, int64_t n, cudaStream_t stream);

}  // namespace efsign::kernels
