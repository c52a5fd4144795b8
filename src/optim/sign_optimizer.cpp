// signsgd, signum and ef-signsgd: compress every layer into one message, one
// allgather per step, decode-average-apply in rank order (Note [wire format]).
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "efsign/error.h"
#include "optim_internal.h"

namespace efsign::detail {
namespace {

class SignOptimizer final : public DistributedOptimizer {
 public:
  SignOptimizer(std::vector<at::Tensor> params, Communicator& data, HostCommunicator& control,
                const OptimizerConfig& config)
      : DistributedOptimizer(std::move(params), data, control, config) {
    if (data_.memory() != MemoryKind::kHost || params_[0].device().is_cuda())
      throw Error("the CPU sign optimizer needs host parameters and a host communicator");
    const int64_t L = table_.num_layers();
    send_.assign(table_.message_words(), 0);
    recv_.assign(table_.message_words() * data_.size(), 0);
    prev_scale_.assign(L, 0.0f);
    for (int64_t l = 0; l < L; ++l) {
      if (config_.kind == OptimizerKind::kEfSignSgd) state_.push_back(at::zeros_like(params_[l]));
      if (config_.kind == OptimizerKind::kSignum) momentum_.push_back(at::zeros_like(params_[l]));
    }
  }

  std::string exchange_name() const override { return fmt::format("allgather of packed signs ({})", data_.backend()); }
  int64_t wire_bytes_per_step() const override { return table_.message_bytes(); }

  void step() override {
    Stopwatch sw;
    const int64_t L = table_.num_layers();
    const bool ef = config_.kind == OptimizerKind::kEfSignSgd;
    const bool signum = config_.kind == OptimizerKind::kSignum;
    codec::CompressParams cp;
    cp.lr = static_cast<float>(config_.lr);
    cp.weight_decay = static_cast<float>(config_.weight_decay);
    cp.momentum = static_cast<float>(config_.momentum);
    cp.scale_mode = signum ? codec::ScaleMode::kFixed : codec::ScaleMode::kMeanAbs;
    cp.fixed_scale = cp.lr;
    float* scales = reinterpret_cast<float*>(send_.data() + table_.scale_offset_words());
    for (int64_t l = 0; l < L; ++l) {
      const at::Tensor g = grad_of(l);
      const int64_t n = table_.size(l);
      codec::LayerBuffers b;
      b.grad = Span<const float>(g.data_ptr<float>(), n);
      b.param = Span<const float>(params_[l].data_ptr<float>(), n);
      if (signum) b.momentum = Span<float>(momentum_[l].data_ptr<float>(), n);
      if (ef) b.state = Span<float>(state_[l].data_ptr<float>(), n);
      b.prev_scale = prev_scale_[l];
      b.words = Span<uint32_t>(send_.data() + table_.word_offset(l), table_.words(l));
      const float s = codec::compress_layer(b, cp, config_.isa);
      scales[l] = s;
      prev_scale_[l] = s;
    }
    stats_.compress_ms = sw.lap_ms();

    const int64_t bytes0 = data_.bytes_sent(), calls0 = data_.calls();
    data_.allgather(as_bytes(Span<const uint32_t>(send_)), as_writable_bytes(Span<uint32_t>(recv_)));
    stats_.bytes_sent = data_.bytes_sent() - bytes0;
    stats_.calls = data_.calls() - calls0;
    stats_.comm_ms = sw.lap_ms();

    std::vector<float> all_scales(data_.size() * L);
    for (int w = 0; w < data_.size(); ++w)
      for (int64_t l = 0; l < L; ++l)
        all_scales[w * L + l] = codec::message_scale(Span<const uint32_t>(recv_), table_, w, l);
    if (nonfinite_verdict(all_scales)) {
      skip_step(scales);
      stats_.update_ms = sw.lap_ms();
      return;
    }
    for (int64_t l = 0; l < L; ++l)
      codec::decode_average_apply(Span<const uint32_t>(recv_), data_.size(), table_, l,
                                  Span<float>(params_[l].data_ptr<float>(), table_.size(l)), config_.isa);
    stats_.update_ms = sw.lap_ms();
  }

  // Nothing is applied. Healthy layers keep all of p as their error (scale 0 means
  // e = c - 0 = p); layers poisoned on this rank lose their error and momentum.
  void skip_step(const float* own_scales) {
    for (int64_t l = 0; l < table_.num_layers(); ++l) {
      const bool poisoned = !std::isfinite(own_scales[l]);
      if (poisoned && !state_.empty()) state_[l].zero_();
      if (poisoned && !momentum_.empty()) momentum_[l].zero_();
      prev_scale_[l] = 0.0f;
    }
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    add_named(out, "ef_state", state_);
    add_named(out, "momentum", momentum_);
    if (!state_.empty())
      out.emplace_back("ef_scale", at::from_blob(prev_scale_.data(), {static_cast<int64_t>(prev_scale_.size())},
                                                 at::TensorOptions().dtype(at::kFloat)));
    return out;
  }

  void reset_state() override {
    zero_all(state_);
    zero_all(momentum_);
    std::fill(prev_scale_.begin(), prev_scale_.end(), 0.0f);
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
  std::vector<uint32_t> send_, recv_;
  std::vector<at::Tensor> state_, momentum_;
  std::vector<float> prev_scale_;
};

}  // namespace

std::unique_ptr<DistributedOptimizer> make_sign(std::vector<at::Tensor> params, Communicator& data,
                                                HostCommunicator& control, const OptimizerConfig& config) {
  return std::make_unique<SignOptimizer>(std::move(params), data, control, config);
}

}  // namespace efsign::detail
