// signsgd, signum and ef-signsgd: their state (EF state and scales, momentum, the
// two-phase server error), bound to a SignExchange; the step is the core's
// (distributed_optimizer.cpp). Device-agnostic: state lives on the parameters' device
// and the codec (host or CUDA) reads it there.
#include <ATen/ATen.h>

#include <cmath>

#include "efsign/exchange.h"
#include "optim_internal.h"

namespace efsign::detail {
namespace {

class SignOptimizer final : public DistributedOptimizer {
 public:
  SignOptimizer(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                std::shared_ptr<HostCommunicator> control, const OptimizerConfig& config, std::shared_ptr<Codec> codec)
      : DistributedOptimizer(std::move(params), std::move(data), std::move(control), config, std::move(codec)) {
    const int64_t L = table_.num_layers();
    const auto f32 = params_[0].options().dtype(at::kFloat);
    prev_scale_ = own(at::zeros({L}, f32));
    auto exchange = std::make_unique<SignExchange>(
        config_.exchange, table_, make_buckets(table_, config_.overlap ? config_.bucket_bytes : 0), data_, codec_);
    server_error_ = own(at::zeros({exchange->server_elems()}, f32));
    std::vector<CodecLayer> layers;
    for (int64_t l = 0; l < L; ++l) {
      CodecLayer d = codec_layer(l);
      if (config_.kind == OptimizerKind::kEfSignSgd) {
        state_.push_back(own(at::zeros_like(params_[l])));
        d.state = state_.back().data_ptr<float>();
      }
      if (config_.kind == OptimizerKind::kSignum) {
        momentum_.push_back(own(at::zeros_like(params_[l])));
        d.momentum = momentum_.back().data_ptr<float>();
      }
      layers.push_back(d);
    }
    exchange->bind(layers, prev_scale_.data_ptr<float>(),
                   server_error_.numel() ? server_error_.data_ptr<float>() : nullptr);
    exchange_ = exchange.get();
    start(std::move(exchange));
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (std::size_t l = 0; l < state_.size(); ++l) out.emplace_back("ef_state." + std::to_string(l), state_[l]);
    for (std::size_t l = 0; l < momentum_.size(); ++l) out.emplace_back("momentum." + std::to_string(l), momentum_[l]);
    if (!state_.empty()) out.emplace_back("ef_scale", prev_scale_);
    if (config_.exchange == ExchangeKind::kTwoPhase) out.emplace_back("server_error", server_error_);
    return out;
  }

  void reset_state() override {
    for (auto& t : state_) t.zero_();
    for (auto& t : momentum_) t.zero_();
    prev_scale_.zero_();
    server_error_.zero_();
  }

  std::vector<at::Tensor> error_buffers() const override {
    std::vector<at::Tensor> out;
    const at::Tensor scales = prev_scale_.to(at::kCPU);
    for (std::size_t l = 0; l < state_.size(); ++l) {
      const at::Tensor c = state_[l].to(at::kCPU).contiguous();
      at::Tensor e = at::empty_like(c);
      codec::error_from_state(Span<const float>(c.data_ptr<float>(), c.numel()), scales[l].item<float>(),
                              Span<float>(e.data_ptr<float>(), e.numel()));
      out.push_back(e.to(state_[l].device()));
    }
    return out;
  }

 private:
  void push_params() override {
    codec::CompressParams cp;
    cp.lr = static_cast<float>(config_.lr);
    cp.weight_decay = static_cast<float>(config_.weight_decay);
    cp.momentum = static_cast<float>(config_.momentum);
    if (config_.kind == OptimizerKind::kSignum) {  // the reference's unscaled sign: scale = lr
      cp.scale_mode = codec::ScaleMode::kFixed;
      cp.fixed_scale = cp.lr;
    }
    exchange_->set_params(cp);
  }

  // Note [non-finite]: nothing is applied. Healthy layers keep all of p as their error
  // (scale 0 means e = c - 0 = p); layers poisoned on this rank (own scale not finite)
  // lose their error and momentum. The two-phase server error is not committed.
  void skip_step() override {
    const at::Tensor own = prev_scale_.to(at::kCPU);  // this step's scales
    const float* s = own.data_ptr<float>();
    for (int64_t l = 0; l < table_.num_layers(); ++l) {
      if (std::isfinite(s[l])) continue;
      if (!state_.empty()) state_[l].zero_();
      if (!momentum_.empty()) momentum_[l].zero_();
    }
    prev_scale_.zero_();
  }

  SignExchange* exchange_ = nullptr;  // owned by the core
  std::vector<at::Tensor> state_, momentum_;
  at::Tensor prev_scale_;    // the scale each layer sent at its last step (Note [error state as p])
  at::Tensor server_error_;  // two-phase: this rank's server error over its chunk
};

}  // namespace

std::unique_ptr<DistributedOptimizer> make_sign(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                                                std::shared_ptr<HostCommunicator> control,
                                                const OptimizerConfig& config, std::shared_ptr<Codec> codec) {
  return std::make_unique<SignOptimizer>(std::move(params), std::move(data), std::move(control), config,
                                         std::move(codec));
}

}  // namespace efsign::detail
