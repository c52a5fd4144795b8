// Internal to src/train: the pieces run_training (trainer.cpp) is made of — the
// batches, evaluation, the meters behind the epoch lines and the summary, the progress
// bar, the model description.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "efsign/communicator.h"
#include "efsign/data.h"
#include "efsign/models.h"
#include "efsign/optimizer.h"
#include "efsign/trainer.h"

namespace efsign::detail {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
std::string human_bytes(double bytes);

// This rank's batches: Note [sharding]'s indices, augmentation seeded by (run, epoch,
// step, rank), normalisation, on the model's device (batches.cpp).
class BatchSource {
 public:
  BatchSource(const Dataset& train, int world, int rank, int64_t batch_per_rank, uint64_t seed, bool augment,
              at::Device device);
  int64_t steps_per_epoch() const { return sharder_.steps_per_epoch(); }
  int64_t batch_per_rank(int64_t epoch, int64_t step) { return static_cast<int64_t>(sharder_.batch(epoch, step).size()); }
  Batch get(int64_t epoch, int64_t step);  // epoch is 1-based

 private:
  const Dataset& train_;
  EpochSharder sharder_;
  uint64_t seed_;
  int rank_;
  bool augment_;
  at::Device device_;
};

struct EvalResult {
  double loss = 0, acc = 0;
};
// Collective (evaluate.cpp): every rank evaluates its share of the test set.
EvalResult evaluate(Model& model, const Dataset& test, HostCommunicator& comm, int64_t eval_batch,
                    const at::Device& device);

// One epoch's sums (meter.cpp): the optimizer's step statistics and this rank's loss
// and correct count, turned into the epoch line and record on rank 0.
class EpochMeter {
 public:
  EpochMeter() : t0_(Clock::now()) {}
  void add_step(const StepStats& st, double fwd_bwd_ms, double loss, double correct, int64_t images);
  int64_t steps() const { return steps_; }
  int64_t skipped() const { return skipped_; }
  double images() const { return images_; }
  double local_loss() const { return images_ > 0 ? loss_sum_ / images_ : 0.0; }  // this rank's, so far
  double seconds() const { return seconds_since(t0_); }
  // Collective: sums over the ranks; call once, at the epoch's end.
  void finish(HostCommunicator& comm);
  double train_loss() const { return agg_[2] > 0 ? agg_[0] / agg_[2] : 0.0; }
  double train_acc() const { return agg_[2] > 0 ? agg_[1] / agg_[2] : 0.0; }
  double global_images() const { return agg_[2]; }
  // Per step, over the steps this epoch ran (0 when it ran none).
  double per_step(double total) const { return steps_ > 0 ? total / static_cast<double>(steps_) : 0.0; }
  double fwd_bwd_ms = 0, compress_ms = 0, comm_ms = 0, update_ms = 0, wait_ms = 0, bytes = 0, wire = 0;

 private:
  Clock::time_point t0_;
  int64_t steps_ = 0, skipped_ = 0;
  double images_ = 0, loss_sum_ = 0, correct_ = 0;
  double agg_[3] = {0, 0, 0};  // over the ranks: loss * n, correct, images
};

// The run's totals over every step it ran (not the steps a resumed run skipped).
struct RunTotals {
  double bytes = 0, wire = 0, steps = 0, seconds = 0, images = 0;
  int64_t skipped = 0;
  void add(const EpochMeter& m) {
    bytes += m.bytes;
    wire += m.wire;
    steps += static_cast<double>(m.steps());
    seconds += m.seconds();
    images += m.global_images();
    skipped += m.skipped();
  }
};

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void update(int64_t epoch, int64_t step, int64_t steps, double loss, double img_per_s);
  void finish();

 private:
  bool enabled_;
  Clock::time_point last_{};
};

// --describe: the model's per-layer table on stdout.
void print_description(const TrainOptions& o, const ModelSpec& spec);

}  // namespace efsign::detail
