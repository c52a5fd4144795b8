// signsgd, signum and ef-signsgd: compress every layer into the exchange's message,
// exchange it (efsign/exchange.h), apply what came back. With --overlap the buckets
// are compressed and exchanged on a communication thread while backward runs.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <utility>

#include "efsign/error.h"
#include "efsign/exchange.h"
#include "optim_internal.h"
#include "overlap.h"

namespace efsign::detail {
namespace {

class SignOptimizer final : public DistributedOptimizer {
 public:
  SignOptimizer(std::vector<at::Tensor> params, Communicator& data, HostCommunicator& control,
                const OptimizerConfig& config)
      : DistributedOptimizer(std::move(params), data, control, config),
        exchange_(config.exchange, table_, make_buckets(table_, config.overlap ? config.bucket_bytes : 0), data_,
                  config.isa) {
    if (data_.memory() != MemoryKind::kHost || params_[0].device().is_cuda())
      throw Error("the CPU sign optimizer needs host parameters and a host communicator");
    const int64_t L = table_.num_layers();
    prev_scale_.assign(L, 0.0f);
    for (int64_t l = 0; l < L; ++l) {
      if (config_.kind == OptimizerKind::kEfSignSgd) state_.push_back(at::zeros_like(params_[l]));
      if (config_.kind == OptimizerKind::kSignum) momentum_.push_back(at::zeros_like(params_[l]));
    }
    const auto& buckets = exchange_.buckets();
    if (config_.overlap) {
      pending_.assign(buckets.size(), 0);
      seen_.assign(L, 0);
      reset_pending();
      thread_ = std::make_unique<CommThread>();
      hooks_ = std::make_unique<GradReadyHooks>(params_, [this](int64_t l) { on_grad_ready(l); });
    }
  }

  ~SignOptimizer() override {
    hooks_.reset();  // no more signals from backward
    if (thread_) {
      try {
        thread_->wait();
      } catch (...) {  // already reported by the step that failed
      }
    }
  }

  std::string exchange_name() const override {
    return exchange_.describe() + (config_.overlap ? ", overlapped with backward" : "");
  }
  int64_t wire_bytes_per_step() const override { return exchange_.handed_bytes_per_step(); }
  int64_t network_bytes_per_step() const override { return exchange_.wire_bytes_per_step(); }

  void step() override {
    Stopwatch sw;
    stats_.compress_ms = stats_.comm_ms = stats_.update_ms = stats_.wait_ms = 0;
    const int nb = static_cast<int>(exchange_.buckets().size());
    stats_.buckets = nb;
    stats_.buckets_started_in_backward = 0;
    if (thread_) {
      // Launch what backward has not (unused parameters, or no autograd at all),
      // then wait only for what is still in flight.
      std::string err;
      {
        std::lock_guard<std::mutex> lock(mu_);
        err = hook_error_;
        stats_.buckets_started_in_backward = next_;
        while (next_ < nb) launch(next_++);
      }
      try {
        thread_->wait();
      } catch (...) {
        reset_pending();
        throw;
      }
      stats_.wait_ms = sw.lap_ms();
      reset_pending();
      if (!err.empty()) throw Error(err);
      std::lock_guard<std::mutex> lock(mu_);
      stats_.compress_ms = compress_ms_;
      stats_.comm_ms = comm_ms_;
    } else {
      for (int b = 0; b < nb; ++b) run_bucket(b);
      stats_.compress_ms = compress_ms_;
      stats_.comm_ms = comm_ms_;
      sw.lap_ms();
    }
    compress_ms_ = comm_ms_ = 0;
    const double server_ms = exchange_.take_server_ms();  // inside the exchange's lap: move it
    stats_.compress_ms += server_ms;
    stats_.comm_ms -= server_ms;
    // Counted around each exchange (the communicator may also carry control traffic).
    stats_.bytes_sent = std::exchange(bytes_, 0);
    stats_.wire_bytes = std::exchange(wire_, 0);
    stats_.calls = std::exchange(calls_, 0);

    const std::string why = exchange_.nonfinite_reason();
    if (nonfinite_verdict(why)) {
      skip_step();
      stats_.update_ms = sw.lap_ms();
      return;
    }
    for (int64_t l = 0; l < table_.num_layers(); ++l)
      exchange_.apply(l, Span<float>(params_[l].data_ptr<float>(), table_.size(l)));
    exchange_.commit();
    stats_.update_ms = sw.lap_ms();
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    add_named(out, "ef_state", state_);
    add_named(out, "momentum", momentum_);
    if (!state_.empty())
      out.emplace_back("ef_scale", at::from_blob(prev_scale_.data(), {static_cast<int64_t>(prev_scale_.size())},
                                                 at::TensorOptions().dtype(at::kFloat)));
    if (config_.exchange == ExchangeKind::kTwoPhase) {
      Span<float> e = exchange_.server_error();
      out.emplace_back("server_error", at::from_blob(e.data(), {static_cast<int64_t>(e.size())},
                                                     at::TensorOptions().dtype(at::kFloat)));
    }
    return out;
  }

  void reset_state() override {
    zero_all(state_);
    zero_all(momentum_);
    std::fill(prev_scale_.begin(), prev_scale_.end(), 0.0f);
    exchange_.reset();
  }

  std::vector<at::Tensor> error_buffers() const override {
    std::vector<at::Tensor> out;
    for (std::size_t l = 0; l < state_.size(); ++l) {
      at::Tensor e = at::empty_like(state_[l]);
      const int64_t n = e.numel();
      codec::error_from_state(Span<const float>(state_[l].data_ptr<float>(), n), prev_scale_[l],
                              Span<float>(e.data_ptr<float>(), n));
      out.push_back(e);
    }
    return out;
  }

 private:
  // Compresses bucket b's layers into the exchange's message and exchanges it. On the
  // communication thread with --overlap, on the caller's otherwise.
  void run_bucket(int b) {
    Stopwatch sw;
    const bool ef = config_.kind == OptimizerKind::kEfSignSgd;
    const bool signum = config_.kind == OptimizerKind::kSignum;
    codec::CompressParams cp;
    cp.lr = static_cast<float>(config_.lr);
    cp.weight_decay = static_cast<float>(config_.weight_decay);
    cp.momentum = static_cast<float>(config_.momentum);
    cp.scale_mode = signum ? codec::ScaleMode::kFixed : codec::ScaleMode::kMeanAbs;
    cp.fixed_scale = cp.lr;
    const Bucket& k = exchange_.buckets()[b];
    for (int64_t l = k.first; l < k.last; ++l) {
      const at::Tensor g = grad_of(l);
      const int64_t n = table_.size(l);
      codec::LayerBuffers buf;
      buf.grad = Span<const float>(g.data_ptr<float>(), n);
      buf.param = Span<const float>(params_[l].data_ptr<float>(), n);
      if (signum) buf.momentum = Span<float>(momentum_[l].data_ptr<float>(), n);
      if (ef) buf.state = Span<float>(state_[l].data_ptr<float>(), n);
      buf.prev_scale = prev_scale_[l];
      buf.words = exchange_.words_of(l);
      const float s = codec::compress_layer(buf, cp, config_.isa);
      exchange_.set_scale(l, s);
      prev_scale_[l] = s;
    }
    const double c_ms = sw.lap_ms();
    const int64_t bytes0 = data_.bytes_sent(), wire0 = data_.wire_bytes(), calls0 = data_.calls();
    exchange_.exchange(b);
    const double x_ms = sw.lap_ms();
    std::lock_guard<std::mutex> lock(mu_);
    compress_ms_ += c_ms;
    comm_ms_ += x_ms;
    bytes_ += data_.bytes_sent() - bytes0;
    wire_ += data_.wire_bytes() - wire0;
    calls_ += data_.calls() - calls0;
  }

  // --overlap: called on the autograd thread when layer l's gradient is complete.
  // Buckets start strictly in order 0, 1, ... on every rank, whatever order their
  // gradients complete in, so the ranks' collectives always match.
  void on_grad_ready(int64_t l) {
    std::lock_guard<std::mutex> lock(mu_);
    if (seen_[l]++) {
      hook_error_ = fmt::format(
          "--overlap: parameter {} received its gradient twice before step() (one backward per step is "
          "supported with --overlap)", l);
      return;
    }
    const int b = exchange_.bucket_of(l);
    if (--pending_[b] > 0) return;
    const int nb = static_cast<int>(pending_.size());
    while (next_ < nb && pending_[next_] == 0) launch(next_++);
  }

  void launch(int b) {  // mu_ held
    thread_->post([this, b] { run_bucket(b); });
  }

  void reset_pending() {
    std::lock_guard<std::mutex> lock(mu_);
    const auto& buckets = exchange_.buckets();
    for (std::size_t b = 0; b < buckets.size(); ++b) pending_[b] = buckets[b].last - buckets[b].first;
    std::fill(seen_.begin(), seen_.end(), 0);
    next_ = 0;
    hook_error_.clear();
  }

  // Nothing is applied. Healthy layers keep all of p as their error (scale 0 means
  // e = c - 0 = p); layers poisoned on this rank lose their error and momentum. The
  // two-phase server error is not committed.
  void skip_step() {
    for (int64_t l = 0; l < table_.num_layers(); ++l) {
      const bool poisoned = !std::isfinite(prev_scale_[l]);  // this step's own scale
      if (poisoned && !state_.empty()) state_[l].zero_();
      if (poisoned && !momentum_.empty()) momentum_[l].zero_();
      prev_scale_[l] = 0.0f;
    }
  }

  SignExchange exchange_;
  std::vector<at::Tensor> state_, momentum_;
  std::vector<float> prev_scale_;  // this rank's scale per layer, sent this step
  // --overlap
  std::mutex mu_;
  std::vector<int64_t> pending_;  // layers of each bucket whose gradient is not ready
  std::vector<int> seen_;
  int next_ = 0;                  // first bucket not yet launched
  std::string hook_error_;
  double compress_ms_ = 0, comm_ms_ = 0;
  int64_t bytes_ = 0, wire_ = 0, calls_ = 0;
  std::unique_ptr<CommThread> thread_;
  std::unique_ptr<GradReadyHooks> hooks_;
};

}  // namespace

std::unique_ptr<DistributedOptimizer> make_sign(std::vector<at::Tensor> params, Communicator& data,
                                                HostCommunicator& control, const OptimizerConfig& config) {
  return std::make_unique<SignOptimizer>(std::move(params), data, control, config);
}

}  // namespace efsign::detail
