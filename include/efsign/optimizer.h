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
// A parameter without a gradient this step (grad undefined: unused in the forward, or
// frozen) is skipped, as the reference skips it: no weight decay, its error, momentum and
// scale untouched. The sign family sends it as zero words with scale 0 (so a layer no
// rank has moves by exactly 0; under vote, its zero bits count as votes); sgdm sends
// zeros and a presence count, and does not update a layer no rank had a gradient for.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "efsign/codec.h"
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
  // The host codec's path; unset: codec::best_isa() (EFSIGN_ISA, else the CPU's best)
  // when the optimizer is made. Ignored for parameters on a GPU.
  std::optional<codec::Isa> isa;
  NonFinitePolicy on_nonfinite = NonFinitePolicy::kSkip;
  // Sign family only (sgdm always allreduces fp32): efsign/exchange.h.
  ExchangeKind exchange = ExchangeKind::kAllgather;
  // Encode and exchange buckets of `bucket_bytes` fp32 as soon as backward has produced
  // their gradients (a communication thread; on a GPU its kernels queue on their own
  // stream). The same bits as without for the sign family (and for sgdm at W = 2).
  bool overlap = false;
  int64_t bucket_bytes = kDefaultBucketBytes;
};

// What the last step() did, for metrics and the step-time breakdown.
struct StepStats {
  int64_t bytes_sent = 0;  // bytes handed to the communicator by this rank
  int64_t wire_bytes = 0;  // bytes this rank put on the network (communicator.h's model)
  int64_t calls = 0;       // collectives issued
  // compress_ms: encoding (compress, or the copy into sgdm's flat buffer, with the
  // two-phase server's decode + re-compress); comm_ms: the collectives (with staging
  // copies). With --overlap both ran on the communication thread (mostly during
  // backward) and wait_ms is what step() itself waited for the buckets still in flight.
  // On a GPU they are measured with CUDA events; update_ms is then the host's time to
  // queue the update (its kernels finish on the GPU after step() returns).
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
  virtual ~DistributedOptimizer();
  DistributedOptimizer(const DistributedOptimizer&) = delete;
  DistributedOptimizer& operator=(const DistributedOptimizer&) = delete;

  // Collective: every rank calls it once per step, after backward. Reads each
  // parameter's grad, exchanges, updates in place (a parameter without a grad: above).
  void step();

  OptimizerKind kind() const { return config_.kind; }
  double lr() const { return config_.lr; }
  // Takes effect from the next bucket encoded (with --overlap: the next backward).
  void set_lr(double lr);
  const OptimizerConfig& config() const { return config_; }
  const LayerTable& layers() const { return table_; }
  const StepStats& last_step() const { return stats_; }
  const Codec& codec() const { return *codec_; }
  // Human-readable exchange, e.g. "allgather of packed signs (mpi)".
  std::string exchange_name() const;
  // Bytes this rank hands to the communicator per step, from the buffers' sizes.
  int64_t handed_bytes_per_step() const;
  // Bytes this rank puts on the network per step (ring model, communicator.h).
  int64_t wire_bytes_per_step() const;

  // Rank-local optimizer state (EF state and scales, momentum, the two-phase server
  // error), named per layer, on the parameters' device; for checkpoints.
  virtual std::vector<std::pair<std::string, at::Tensor>> state_tensors() = 0;
  // Zeroes all optimizer state (error and momentum), as the reference code's restart.
  virtual void reset_state() = 0;
  // EF error e = p - s*sign(p) per layer (empty for optimizers without error feedback).
  virtual std::vector<at::Tensor> error_buffers() const { return {}; }

 protected:
  DistributedOptimizer(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                       std::shared_ptr<HostCommunicator> control, OptimizerConfig config, std::shared_ptr<Codec> codec);
  // The subclass hands over its exchange, bound to its buffers; overlap starts here.
  void start(std::unique_ptr<GradientExchange> exchange);
  // The config's learning rate, momentum and weight decay into the exchange; called by
  // start() and set_lr().
  virtual void push_params() = 0;
  virtual void skip_step() = 0;     // what a skipped step does to the state
  // layer l's buffers as the codec sees them (param; no grad yet).
  CodecLayer codec_layer(int64_t l) const;
  // Every tensor the exchange reads or writes (state, momentum, scales) is handed to the
  // base, which keeps it alive until the communication thread has stopped and the
  // exchange is gone: a subclass's members die before the base's destructor runs, while
  // a bucket launched by backward may still be using them.
  at::Tensor own(at::Tensor t);

  std::vector<at::Tensor> params_;
  std::shared_ptr<Communicator> data_;
  std::shared_ptr<HostCommunicator> control_;
  std::shared_ptr<Codec> codec_;
  OptimizerConfig config_;
  LayerTable table_;
  StepStats stats_;

 private:
  void run_bucket(int b);  // on the caller's thread, or on the communication thread
  bool nonfinite_verdict(const std::string& reason);

  std::vector<at::Tensor> owned_;  // see own(); declared before what uses them
  std::unique_ptr<GradientExchange> exchange_;
  std::vector<at::Tensor> grads_;  // this step's gradients, alive until the step's host wait
  class Overlap;
  std::unique_ptr<Overlap> overlap_;  // declared last: stopped before the exchange goes
};

// Builds the optimizer for `config.kind` on the parameters' device. `data` moves the
// gradients (a host communicator for CPU parameters; NCCL or a host communicator for
// GPU parameters), `control` carries agreement and metrics; the optimizer shares their
// ownership, so it can never outlive them. `codec` (optional) replaces the default
// (the host codec on config.isa, or the CUDA codec of the parameters' GPU). Checks that
// every rank has the same layer table, optimizer and exchange (AgreedError otherwise).
std::unique_ptr<DistributedOptimizer> make_optimizer(std::vector<at::Tensor> params,
                                                     std::shared_ptr<Communicator> data,
                                                     std::shared_ptr<HostCommunicator> control,
                                                     const OptimizerConfig& config,
                                                     std::shared_ptr<Codec> codec = nullptr);

}  // namespace efsign
