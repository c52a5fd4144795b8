// The optimizer core shared by every optimizer, device and transport: one step() that
// runs the exchange's buckets (on the caller's thread, or with --overlap on a
// communication thread started by backward's gradient-ready hooks), agrees on the
// non-finite verdict, and applies or skips. The subclasses (sign_optimizer.cpp,
// sgdm_optimizer.cpp) only own their state and bind it to their exchange.
#include "efsign/optimizer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#if defined(EFSIGN_TORCH_CUDA)
#include <c10/cuda/CUDAStream.h>
#endif

#include <cmath>
#include <mutex>

#include "efsign/checksum.h"
#include "efsign/error.h"
#include "optim_internal.h"
#include "overlap.h"

namespace efsign {

OptimizerKind parse_optimizer(const std::string& name) {
  if (name == "sgdm") return OptimizerKind::kSgdm;
  if (name == "signsgd") return OptimizerKind::kSignSgd;
  if (name == "signum") return OptimizerKind::kSignum;
  if (name == "ef-signsgd") return OptimizerKind::kEfSignSgd;
  throw UsageError(fmt::format("unknown optimizer '{}' (choose one of: sgdm, signsgd, signum, ef-signsgd)", name));
}

std::string optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgdm: return "sgdm";
    case OptimizerKind::kSignSgd: return "signsgd";
    case OptimizerKind::kSignum: return "signum";
    case OptimizerKind::kEfSignSgd: return "ef-signsgd";
  }
  throw Error("optimizer_name: unknown OptimizerKind");
}

std::vector<std::string> optimizer_names() { return {"sgdm", "signsgd", "signum", "ef-signsgd"}; }

namespace {

LayerTable table_of(const std::vector<at::Tensor>& params) {
  std::vector<int64_t> sizes;
  sizes.reserve(params.size());
  for (const auto& p : params) sizes.push_back(p.numel());
  return LayerTable(std::move(sizes));
}

// The stream LibTorch queues the caller's work on for `device`; nullptr (the legacy
// default stream) for CPU tensors or a LibTorch without CUDA.
void* caller_stream(const at::Device& device) {
#if defined(EFSIGN_TORCH_CUDA)
  if (device.is_cuda()) return c10::cuda::getCurrentCUDAStream(device.index()).stream();
#endif
  (void)device;
  return nullptr;
}

}  // namespace

// --overlap: buckets start on the communication thread as soon as backward has
// produced all their gradients and every earlier bucket has started, so every rank
// starts them in the same order whatever order backward finishes them in. On a GPU
// the hook also records an event on the compute stream, which the bucket's kernels
// wait for (the gradient is queued, not necessarily computed, when the hook runs).
class DistributedOptimizer::Overlap {
 public:
  Overlap(DistributedOptimizer& opt) : opt_(opt), buckets_(opt.exchange_->buckets()) {
    const int64_t L = opt.table_.num_layers();
    pending_.assign(buckets_.size(), 0);
    seen_.assign(L, 0);
    ready_.resize(buckets_.size());
    reset();
    thread_ = std::make_unique<detail::CommThread>();
    hooks_ = std::make_unique<detail::GradReadyHooks>(opt.params_, [this](int64_t l) { on_grad_ready(l); });
  }
  ~Overlap() {
    hooks_.reset();  // no more signals from backward
    try {
      thread_->wait();
    } catch (...) {  // already reported by the step that failed
    }
  }

  // Posts what backward has not (parameters without a gradient, or no autograd at
  // all), waits for every bucket, and returns how many started during backward.
  int64_t finish_step() {
    std::string err;
    int64_t started = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      err = hook_error_;
      started = next_;
      while (next_ < static_cast<int>(buckets_.size())) launch(next_++);
    }
    try {
      thread_->wait();
    } catch (...) {
      reset();
      throw;
    }
    reset();
    if (!err.empty()) throw Error(err);
    return started;
  }

 private:
  void on_grad_ready(int64_t l) {
    std::lock_guard<std::mutex> lock(mu_);
    if (seen_[l]++) {
      hook_error_ = fmt::format(
          "--overlap: parameter {} received its gradient twice before step() (one backward per step is "
          "supported with --overlap)", l);
      return;
    }
    const int b = opt_.exchange_->bucket_of(l);
    if (--pending_[b] > 0) return;
    const int nb = static_cast<int>(pending_.size());
    while (next_ < nb && pending_[next_] == 0) launch(next_++);
  }

  void launch(int b) {  // mu_ held; on the autograd thread or in step()
    Codec& codec = opt_.exchange_->codec();
    if (codec.device_kind() == DeviceKind::kCuda) ready_[b] = codec.record_on(caller_stream(opt_.params_[0].device()));
    thread_->post([this, b] {
      if (ready_[b]) opt_.exchange_->codec().wait(*ready_[b]);
      opt_.run_bucket(b);
    });
  }

  void reset() {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].last - buckets_[b].first;
    std::fill(seen_.begin(), seen_.end(), 0);
    next_ = 0;
    hook_error_.clear();
  }

  DistributedOptimizer& opt_;
  const std::vector<Bucket>& buckets_;
  std::mutex mu_;
  std::vector<int64_t> pending_;  // layers of each bucket whose gradient is not ready
  std::vector<int> seen_;
  std::vector<std::unique_ptr<CodecEvent>> ready_;
  int next_ = 0;  // first bucket not yet launched
  std::string hook_error_;
  std::unique_ptr<detail::CommThread> thread_;
  std::unique_ptr<detail::GradReadyHooks> hooks_;
};

DistributedOptimizer::DistributedOptimizer(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                                           std::shared_ptr<HostCommunicator> control, OptimizerConfig config,
                                           std::shared_ptr<Codec> codec)
    : params_(std::move(params)), data_(std::move(data)), control_(std::move(control)), codec_(std::move(codec)),
      config_(config), table_(table_of(params_)) {
  if (!data_ || !control_ || !codec_) throw Error("optimizer: no data communicator, control communicator or codec");
  for (std::size_t l = 0; l < params_.size(); ++l) {
    const auto& p = params_[l];
    if (p.scalar_type() != at::kFloat) throw Error(fmt::format("parameter {} is not float32", l));
    if (!p.is_contiguous()) throw Error(fmt::format("parameter {} is not contiguous", l));
    if (p.device() != params_[0].device())
      throw Error(fmt::format("parameter {} is on {}, parameter 0 on {}: all must share one device", l,
                              p.device().str(), params_[0].device().str()));
  }
  if (data_->size() != control_->size() || data_->rank() != control_->rank())
    throw Error("data and control communicators disagree on rank or world size");
  if (!(config_.lr >= 0)) throw UsageError(fmt::format("learning rate must be >= 0 (got {})", config_.lr));
  if (!(config_.momentum >= 0 && config_.momentum < 1))
    throw UsageError(fmt::format("momentum must be in [0, 1) (got {})", config_.momentum));
  if (!(config_.weight_decay >= 0))
    throw UsageError(fmt::format("weight decay must be >= 0 (got {})", config_.weight_decay));
  if (config_.kind == OptimizerKind::kSgdm && config_.exchange != ExchangeKind::kAllgather)
    throw UsageError("sgdm always exchanges by fp32 allreduce: --exchange is for the sign optimizers");
  if (config_.overlap && config_.bucket_bytes <= 0)
    throw UsageError(fmt::format("bucket size must be > 0 (got {} bytes)", config_.bucket_bytes));
  uint64_t h = fnv1a_u64(table_.hash(), fnv1a_string(optimizer_name(config_.kind)));
  agree_or_throw(*control_, h, "the model's layer table and the optimizer");
  h = fnv1a_string(exchange_kind_name(config_.exchange));
  h = fnv1a_u64(h, config_.overlap ? static_cast<uint64_t>(config_.bucket_bytes) : 0);
  agree_or_throw(*control_, h, "the exchange (--exchange, --overlap, --bucket-mb)");
  grads_.resize(params_.size());
}

DistributedOptimizer::~DistributedOptimizer() = default;

void DistributedOptimizer::set_lr(double lr) {
  config_.lr = lr;
  push_params();
}

void DistributedOptimizer::start(std::unique_ptr<GradientExchange> exchange) {
  exchange_ = std::move(exchange);
  push_params();
  if (config_.overlap) overlap_ = std::make_unique<Overlap>(*this);
}

at::Tensor DistributedOptimizer::own(at::Tensor t) {
  owned_.push_back(t);
  return t;
}

CodecLayer DistributedOptimizer::codec_layer(int64_t l) const {
  CodecLayer d;
  d.param = params_[l].data_ptr<float>();
  d.n = table_.size(l);
  return d;
}

std::string DistributedOptimizer::exchange_name() const {
  return exchange_->describe() + (config_.overlap ? ", overlapped with backward" : "");
}
int64_t DistributedOptimizer::handed_bytes_per_step() const { return exchange_->handed_bytes_per_step(); }
int64_t DistributedOptimizer::wire_bytes_per_step() const { return exchange_->wire_bytes_per_step(); }

void DistributedOptimizer::run_bucket(int b) {
  const Bucket& k = exchange_->buckets()[b];
  for (int64_t l = k.first; l < k.last; ++l) {
    at::Tensor& p = params_[l];
    at::Tensor g = p.grad();
    if (!g.defined()) {  // no gradient this step: the codec skips the layer (optimizer.h)
      exchange_->set_grad(l, nullptr);
      continue;
    }
    if (g.scalar_type() != at::kFloat || g.device() != p.device())
      throw Error(fmt::format("gradient of parameter {} is not float32 on the parameter's device", l));
    if (!g.is_contiguous()) g = g.contiguous();
    grads_[l] = g;  // kept until the step's host wait: the codec may read it later
    exchange_->set_grad(l, g.data_ptr<float>());
  }
  exchange_->run(b);
}

void DistributedOptimizer::step() {
  detail::Stopwatch sw;
  stats_ = StepStats{};
  stats_.buckets = static_cast<int64_t>(exchange_->buckets().size());
  void* stream = caller_stream(params_[0].device());
  if (overlap_) {
    stats_.buckets_started_in_backward = overlap_->finish_step();
    stats_.wait_ms = sw.lap_ms();
  } else {
    exchange_->wait_for(stream);  // the gradients are queued on the caller's stream
    for (int b = 0; b < static_cast<int>(exchange_->buckets().size()); ++b) run_bucket(b);
  }
  const std::string why = exchange_->finish();
  std::fill(grads_.begin(), grads_.end(), at::Tensor());
  const GradientExchange::Totals t = exchange_->take_totals();
  stats_.compress_ms = t.encode_ms;
  stats_.comm_ms = t.comm_ms;
  stats_.bytes_sent = t.bytes_sent;
  stats_.wire_bytes = t.wire_bytes;
  stats_.calls = t.calls;
  sw.lap_ms();
  if (nonfinite_verdict(why)) {
    skip_step();
  } else {
    exchange_->apply();
  }
  exchange_->signal(stream);  // the caller's next work waits for the update
  stats_.update_ms = sw.lap_ms();
}

bool DistributedOptimizer::nonfinite_verdict(const std::string& reason) {
  stats_.skipped = !reason.empty();
  stats_.skip_reason = reason;
  if (stats_.skipped && config_.on_nonfinite == NonFinitePolicy::kAbort)
    throw AgreedError(reason + " (--on-nonfinite abort)");
  return stats_.skipped;
}

std::unique_ptr<DistributedOptimizer> make_optimizer(std::vector<at::Tensor> params,
                                                     std::shared_ptr<Communicator> data,
                                                     std::shared_ptr<HostCommunicator> control,
                                                     const OptimizerConfig& config, std::shared_ptr<Codec> codec) {
  if (params.empty()) throw Error("make_optimizer: no parameters");
  const at::Device device = params[0].device();
  if (!codec) {
    codec = device.is_cuda() ? make_cuda_codec(device.index()) : make_host_codec(config.isa.value_or(codec::best_isa()));
  } else if (codec->device_kind() == DeviceKind::kCuda && !codec->emulated() && !device.is_cuda()) {
    throw UsageError(fmt::format("the {} codec needs parameters on a GPU; they are on {}", codec->describe(),
                                 device.str()));
  }
  if (device.is_cuda() && codec->device_kind() != DeviceKind::kCuda)
    throw UsageError("parameters on a GPU need the CUDA codec");
  switch (config.kind) {
    case OptimizerKind::kSgdm:
      return detail::make_sgdm(std::move(params), std::move(data), std::move(control), config, std::move(codec));
    case OptimizerKind::kSignSgd:
    case OptimizerKind::kSignum:
    case OptimizerKind::kEfSignSgd:
      return detail::make_sign(std::move(params), std::move(data), std::move(control), config, std::move(codec));
  }
  throw Error("make_optimizer: unknown OptimizerKind");
}

}  // namespace efsign
