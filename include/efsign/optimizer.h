// efsign/optimizer.h — distributed optimizers: what each rank sends and how the
// received messages update the replica. All four share one interface and one call
// order per step (so collectives can never be mismatched across ranks).
//
// Update rules (per parameter tensor = layer, following the paper's reference code
// epfml/error-feedback-SGD, optimizers/ErrorFeedbackSGD.py, and PyTorch's SGD):
//   sgdm       g = allreduce_sum(grad) / W ; g = g + wd * x ; m = beta * m + g ; x = x - lr * m
//              (m = 0 initially, so the first step gives m = g exactly, as torch.optim.SGD)
//   signsgd    g = grad + wd * x ; p = lr * g ; s = |p|_1 / d         ; send (sign(p), s)
//   signum     g = grad + wd * x ; m = beta * m + g ; p = lr * m ; s = lr ; send (sign(p), s)
//   ef-signsgd g = grad + wd * x ; p = e + lr * g ; s = |p|_1 / d ; e = p - s * sign(p)
//                                                                     ; send (sign(p), s)
//   sign family, on every rank:  x = x - (1/W) * sum_{w=0..W-1} s_w * sign(p_w)
// Weight decay enters the gradient first, on every tensor (biases and norms too), and
// locally for the sign family (it is part of what is compressed) but after the
// average for sgdm (as DDP + torch.optim.SGD do). The EF error is stored in lr units:
// a learning-rate change does not rescale it (the reference's choice; BytePS rescales).
// sign(0) = +1. EF-SignSGD has no momentum, as in the paper.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "efsign/communicator.h"
#include "efsign/exchange.h"
#include "efsign/layer_table.h"
#include "efsign/sign_codec.h"

namespace efsign {

enum class OptimizerKind { kSgdm, kSignSgd, kSignum, kEfSignSgd };

OptimizerKind parse_optimizer(const std::string& name);  // throws UsageError
std::string optimizer_name(OptimizerKind kind);
std::vector<std::string> optimizer_names();

// What every rank does, together, when some rank's gradient holds a NaN or Inf
// (Note [non-finite] in sign_codec.h; for sgdm: the averaged gradient).
enum class NonFinitePolicy { kSkip, kAbort };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kEfSignSgd;
  double lr = 0.01;
  double momentum = 0.9;  // sgdm and signum only
  double weight_decay = 0.0;
  codec::Isa isa = codec::best_isa();
  NonFinitePolicy on_nonfinite = NonFinitePolicy::kSkip;
  // Sign family only (sgdm always allreduces fp32): efsign/exchange.h.
  ExchangeKind exchange = ExchangeKind::kAllgather;
  // Compress and exchange buckets of `bucket_bytes` fp32 on a communication thread as
  // soon as backward has produced their gradients (CPU sign family). Same bits as without.
  bool overlap = false;
  int64_t bucket_bytes = kDefaultBucketBytes;
};

// What the last step() did, for metrics and the step-time breakdown.
struct StepStats {
  int64_t bytes_sent = 0;  // bytes handed to the communicator by this rank
  int64_t wire_bytes = 0;  // bytes this rank put on the network (communicator.h's model)
  int64_t calls = 0;       // collectives issued
  // compress_ms includes the two-phase server's decode + re-compress. With --overlap,
  // compress_ms and comm_ms ran on the communication thread (mostly during backward)
  // and wait_ms is what step() itself waited for the buckets still in flight. On the
  // CUDA path with --overlap, compress runs on the NCCL stream and is not timed
  // apart: compress_ms is 0 and comm_ms is the GPU-side wait; on the CUDA two-phase
  // path the server's work is inside comm_ms.
  double compress_ms = 0, comm_ms = 0, update_ms = 0, wait_ms = 0;
  int64_t buckets = 1;                      // exchanges (buckets) this step
  int64_t buckets_started_in_backward = 0;  // --overlap: started before step() was called
  // The step was skipped on every rank: a gradient was not finite. The parameters did
  // not change; for ef-signsgd every healthy rank keeps all of p as its error (nothing
  // is lost), the offending rank zeroes the error (and momentum) of the poisoned layers.
  bool skipped = false;
  std::string skip_reason;
};

class DistributedOptimizer {
 public:
  virtual ~DistributedOptimizer() = default;

  // Collective: every rank calls it once per step, after backward. Reads each
  // parameter's grad (a missing grad counts as zeros), exchanges, updates in place.
  virtual void step() = 0;

  OptimizerKind kind() const { return config_.kind; }
  double lr() const { return config_.lr; }
  void set_lr(double lr) { config_.lr = lr; }
  const OptimizerConfig& config() const { return config_; }
  const LayerTable& layers() const { return table_; }
  const StepStats& last_step() const { return stats_; }
  // Human-readable exchange, e.g. "allgather of packed signs (mpi)".
  virtual std::string exchange_name() const = 0;
  // Bytes this rank hands the communicator per step, from the buffers' sizes.
  virtual int64_t wire_bytes_per_step() const = 0;
  // Bytes this rank puts on the network per step (ring model, communicator.h).
  virtual int64_t network_bytes_per_step() const = 0;

  // Rank-local optimizer state (EF state, momentum), named per layer; for checkpoints.
  virtual std::vector<std::pair<std::string, at::Tensor>> state_tensors() = 0;
  // Zeroes all optimizer state (error and momentum), as the reference code's restart.
  virtual void reset_state() = 0;
  // EF error e = p - s*sign(p) per layer (empty for optimizers without error feedback).
  virtual std::vector<at::Tensor> error_buffers() const { return {}; }

 protected:
  DistributedOptimizer(std::vector<at::Tensor> params, Communicator& data, HostCommunicator& control,
                       OptimizerConfig config);
  // grad of layer l as a contiguous float tensor (zeros if the parameter has none).
  at::Tensor grad_of(int64_t l);
  // After the exchange: `scales` holds W rows of L scales (row w = rank w's). Returns
  // true (and fills stats_) if the step must be skipped; throws AgreedError on every
  // rank under NonFinitePolicy::kAbort.
  bool nonfinite_verdict(const std::vector<float>& scales);
  // The same, given the reason ("" = all finite), as SignExchange::nonfinite_reason().
  bool nonfinite_verdict(const std::string& reason);
  // For sgdm: `finite` says whether the averaged gradient was finite.
  bool nonfinite_verdict_dense(bool finite);
  // Appends ("prefix.l", tensors[l]) for every layer l (state_tensors() helpers).
  static void add_named(std::vector<std::pair<std::string, at::Tensor>>& out, const char* prefix,
                        const std::vector<at::Tensor>& tensors);
  static void zero_all(std::vector<at::Tensor>& tensors);

  std::vector<at::Tensor> params_;
  Communicator& data_;
  HostCommunicator& control_;
  OptimizerConfig config_;
  LayerTable table_;
  StepStats stats_;
};

// Builds the optimizer for `config.kind`. Checks that every rank has the same layer
// table and optimizer (CommError on every rank otherwise).
std::unique_ptr<DistributedOptimizer> make_optimizer(std::vector<at::Tensor> params, Communicator& data,
                                                     HostCommunicator& control, const OptimizerConfig& config);

}  // namespace efsign
