// sgdm: the uncompressed baseline. One fp32 allreduce of all gradients per step
// (a single flat buffer, one call), then momentum SGD as torch.optim.SGD does it.
#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "efsign/error.h"
#include "optim_internal.h"

namespace efsign::detail {
namespace {

class SgdmOptimizer final : public DistributedOptimizer {
 public:
  SgdmOptimizer(std::vector<at::Tensor> params, Communicator& data, HostCommunicator& control,
                const OptimizerConfig& config)
      : DistributedOptimizer(std::move(params), data, control, config) {
    if (data_.memory() != MemoryKind::kHost || params_[0].device().is_cuda())
      throw Error("the CPU sgdm optimizer needs host parameters and a host communicator");
    flat_.assign(table_.total_elements(), 0.0f);
    for (auto& p : params_) momentum_.push_back(at::zeros_like(p));
  }

  std::string exchange_name() const override { return fmt::format("fp32 allreduce ({})", data_.backend()); }
  int64_t wire_bytes_per_step() const override { return table_.fp32_bytes(); }
  int64_t network_bytes_per_step() const override {
    return ring_allreduce_wire_bytes(table_.fp32_bytes(), data_.size());
  }

  void step() override {
    Stopwatch sw;
    const int64_t L = table_.num_layers();
    for (int64_t l = 0; l < L; ++l) {
      const at::Tensor g = grad_of(l);
      std::memcpy(flat_.data() + table_.elem_offset(l), g.data_ptr<float>(), 4 * table_.size(l));
    }
    stats_.compress_ms = sw.lap_ms();
    const int64_t bytes0 = data_.bytes_sent(), wire0 = data_.wire_bytes(), calls0 = data_.calls();
    data_.allreduce_sum(Span<float>(flat_));
    stats_.bytes_sent = data_.bytes_sent() - bytes0;
    stats_.wire_bytes = data_.wire_bytes() - wire0;
    stats_.calls = data_.calls() - calls0;
    stats_.comm_ms = sw.lap_ms();

    {  // x * 0 is 0 for finite x and NaN otherwise: one vectorisable pass.
      float probe = 0.0f;
      for (float v : flat_) probe += v * 0.0f;
      if (nonfinite_verdict_dense(std::isfinite(probe))) {
        stats_.update_ms = sw.lap_ms();
        return;
      }
    }
    const float world = static_cast<float>(data_.size());
    const float lr = static_cast<float>(config_.lr);
    const float wd = static_cast<float>(config_.weight_decay);
    const float beta = static_cast<float>(config_.momentum);
    for (int64_t l = 0; l < L; ++l) {
      float* x = params_[l].data_ptr<float>();
      float* m = momentum_[l].data_ptr<float>();
      const float* g = flat_.data() + table_.elem_offset(l);
      const int64_t n = table_.size(l);
      for (int64_t i = 0; i < n; ++i) {
        float gi = g[i] / world;
        gi = gi + wd * x[i];
        const float mi = beta * m[i] + gi;
        m[i] = mi;
        x[i] = x[i] - lr * mi;
      }
    }
    stats_.update_ms = sw.lap_ms();
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    add_named(out, "momentum", momentum_);
    return out;
  }
  void reset_state() override {
    zero_all(momentum_);
  }

 private:
  std::vector<float> flat_;
  std::vector<at::Tensor> momentum_;
};

}  // namespace

std::unique_ptr<DistributedOptimizer> make_sgdm(std::vector<at::Tensor> params, Communicator& data,
                                                HostCommunicator& control, const OptimizerConfig& config) {
  return std::make_unique<SgdmOptimizer>(std::move(params), data, control, config);
}

}  // namespace efsign::detail
