// sgdm: the uncompressed baseline. Its momentum, bound to a DenseExchange (fp32
// allreduce of the gradients in buckets, then momentum SGD as torch.optim.SGD does
// it); the step is the core's (distributed_optimizer.cpp).
#include <ATen/ATen.h>

#include "efsign/exchange.h"
#include "optim_internal.h"

namespace efsign::detail {
namespace {

class SgdmOptimizer final : public DistributedOptimizer {
 public:
  SgdmOptimizer(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                std::shared_ptr<HostCommunicator> control, const OptimizerConfig& config, std::shared_ptr<Codec> codec)
      : DistributedOptimizer(std::move(params), std::move(data), std::move(control), config, std::move(codec)) {
    auto exchange = std::make_unique<DenseExchange>(
        table_, make_buckets(table_, config_.overlap ? config_.bucket_bytes : 0), data_, codec_);
    std::vector<CodecLayer> layers;
    for (int64_t l = 0; l < table_.num_layers(); ++l) {
      momentum_.push_back(own(at::zeros_like(params_[l])));
      CodecLayer d = codec_layer(l);
      d.momentum = momentum_.back().data_ptr<float>();
      layers.push_back(d);
    }
    exchange->bind(layers);
    exchange_ = exchange.get();
    start(std::move(exchange));
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (std::size_t l = 0; l < momentum_.size(); ++l) out.emplace_back("momentum." + std::to_string(l), momentum_[l]);
    return out;
  }
  void reset_state() override {
    for (auto& t : momentum_) t.zero_();
  }

 private:
  void push_params() override {
    exchange_->set_params(SgdmParams{static_cast<float>(config_.lr), static_cast<float>(config_.weight_decay),
                                     static_cast<float>(config_.momentum)});
  }
  void skip_step() override {}  // nothing was applied; the momentum stays

  DenseExchange* exchange_ = nullptr;  // owned by the core
  std::vector<at::Tensor> momentum_;
};

}  // namespace

std::unique_ptr<DistributedOptimizer> make_sgdm(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                                                std::shared_ptr<HostCommunicator> control,
                                                const OptimizerConfig& config, std::shared_ptr<Codec> codec) {
  return std::make_unique<SgdmOptimizer>(std::move(params), std::move(data), std::move(control), config,
                                         std::move(codec));
}

}  // namespace efsign::detail
