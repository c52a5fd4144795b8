// efsign/checkpoint.h — checkpoints as generations that stay consistent across ranks.
//
// Note [checkpoint generations]
//   DIR/gen-NNNNNN/rank-R.ckpt holds rank R's own state at one point of the run:
//   parameters, buffers (BatchNorm statistics are rank-local within an epoch), the
//   optimizer's state (EF state and scales, momentum, the two-phase server error) and
//   the position (epoch, step in it, global step). Data order and augmentation are
//   functions of (seed, epoch, step, rank), so the seed is the whole RNG state.
//   A generation becomes current only when every rank's file of it is durable:
//     1. every rank writes rank-R.ckpt.tmp, fsyncs it, renames it and fsyncs the folder;
//     2. the ranks agree (a collective) that every write succeeded; if one failed, every
//        rank removes its file of the new generation, and all fail with its message;
//     3. rank 0 writes DIR/manifest.json naming the generation (temp file, fsync, rename,
//        fsync DIR) — the commit point — and the ranks agree again;
//     4. generations beyond the newest `keep` are removed.
//   A crash anywhere leaves the previous generation current and intact. Resume reads
//   the manifest on rank 0, hands it to every rank, and every rank loads that
//   generation; any mismatch (a missing or damaged file, another step, world size,
//   model, optimizer, layer, batch size, data set or seed) is an InputError with the
//   same one line on every rank, and nothing is written. Only after a successful load
//   are leftovers of an interrupted save (unpublished generations, .tmp files) removed.
//   Works on a shared file system and on node-local ones (each node holds its ranks'
//   files; the manifest on rank 0's is the one read). Every file ends with an FNV-1a
//   checksum of its contents.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "efsign/communicator.h"

namespace efsign {

struct CheckpointHeader {
  int32_t world_size = 1, rank = 0;
  int64_t epoch = 0;        // 1-based epoch to resume in
  int64_t step = 0;         // steps of that epoch already done
  int64_t global_step = 0;  // steps done in total
  uint64_t layout_hash = 0;
  uint64_t seed = 0;
  std::string model, optimizer;
  // What else a bit-identical resume needs to be the same (format 2 on).
  int64_t batch_size = 0;  // per rank
  std::string dataset;
  int32_t threads = 0;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// One rank's file, read and written alone (the fuzzer and the tests use these; runs use
// Checkpointer). read_checkpoint_file compares the header with `expect` as load()
// does and copies the tensors into `into`; both throw InputError naming the file.
void write_checkpoint_file(const std::string& path, const CheckpointHeader& header, const NamedTensors& tensors);
CheckpointHeader read_checkpoint_file(const std::string& path, const CheckpointHeader& expect,
                                      const NamedTensors& into);

class Checkpointer {
 public:
  // `keep`: generations kept (>= 1). Nothing is touched until start().
  Checkpointer(std::string dir, HostCommunicator& comm, int keep);

  // Collective, before training. Creates DIR, checks that every rank can write there
  // (an InputError with the OS's reason otherwise). Unless resuming: refuses (a
  // UsageError) a DIR that holds a checkpoint, or with `overwrite` removes it.
  void start(bool resume, bool overwrite);

  // Collective: the current generation, loaded into `into` (tensors copied by name,
  // same shape and dtype). `expect` holds this run's header: world size, model,
  // optimizer, seed, batch size, data set and the layer table must match (an
  // InputError names the first difference; for the layer table, the first tensor whose
  // name or shape differs). Threads may differ: `*threads_changed` says so (the run is
  // then not bit-identical to an uninterrupted one).
  CheckpointHeader load(const CheckpointHeader& expect, const NamedTensors& into, bool* threads_changed);

  // Collective: writes a new generation and makes it current (Note [checkpoint
  // generations]); throws InputError (every rank, the failing rank's message) when any
  // rank's write failed, leaving the previous generation current.
  void save(const CheckpointHeader& header, const NamedTensors& into);

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  HostCommunicator& comm_;
  int keep_;
  int64_t current_ = 0;  // the published generation (0: none)
};

}  // namespace efsign
