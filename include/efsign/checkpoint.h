// efsign/checkpoint.h — per-rank checkpoints that resume bit-identically.
//
// DIR/rank-R.ckpt holds rank R's own state: parameters, buffers (BatchNorm statistics
// are rank-local within an epoch), the optimizer's state (EF state and scales,
// momentum) and the position (epoch, step within it, global step). The data order
// and augmentation are functions of (seed, epoch, step, rank), so they need no RNG
// state beyond the seed, which is stored. DIR/manifest.json (rank 0, written last)
// names the format version, world size, model, optimizer, layer-table hash and step.
//
// Files are written to a temporary name, fsync'ed and renamed: a crash while writing
// never damages the previous checkpoint. Every file ends with an FNV-1a checksum of
// its contents; any damage or a foreign file is an InputError naming the file.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace efsign {

struct CheckpointHeader {
  int32_t world_size = 1, rank = 0;
  int64_t epoch = 0;        // 1-based epoch to resume in
  int64_t step = 0;         // steps of that epoch already done
  int64_t global_step = 0;  // steps done in total
  uint64_t layout_hash = 0;
  uint64_t seed = 0;
  std::string model, optimizer;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes DIR/rank-R.ckpt atomically (temp file, fsync, rename). Tensors are copied to CPU.
void save_checkpoint(const std::string& dir, const CheckpointHeader& header, const NamedTensors& tensors);

// Reads DIR/rank-R.ckpt. First compares its header with `expect` (world size, model,
// optimizer, layer table, seed: an InputError names the first mismatch), then copies
// every stored tensor into the tensor of the same name in `into` (same shape and dtype).
// Throws InputError for anything missing, damaged, foreign, or not matching.
CheckpointHeader load_checkpoint(const std::string& dir, const CheckpointHeader& expect, const NamedTensors& into);

// Rank 0, after every rank's file is durable: DIR/manifest.json, atomically.
void write_manifest(const std::string& dir, const CheckpointHeader& header);

}  // namespace efsign
