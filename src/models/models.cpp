#include "efsign/models.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include "efsign/error.h"

namespace efsign {
namespace {

// 784-256-128-10 for Fashion-MNIST: ~235k parameters in 6 layers.
class Mlp final : public Model {
 public:
  explicit Mlp(const ModelSpec& s)
      : fc1_(register_module("fc1", torch::nn::Linear(s.channels * s.height * s.width, 256))),
        fc2_(register_module("fc2", torch::nn::Linear(256, 128))),
        fc3_(register_module("fc3", torch::nn::Linear(128, s.num_classes))) {}
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = x.flatten(1);
    h = torch::relu(fc1_->forward(h));
    h = torch::relu(fc2_->forward(h));
    return fc3_->forward(h);
  }

 private:
  torch::nn::Linear fc1_, fc2_, fc3_;
};

// Two 5x5 conv + ReLU + 2x2 max-pool stages, then 128 hidden units: ~216k parameters
// for 28x28x1, quick on one CPU thread.
class ConvNet final : public Model {
 public:
  explicit ConvNet(const ModelSpec& s)
      : conv1_(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(s.channels, 16, 5).padding(2)))),
        conv2_(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 5).padding(2)))),
        fc1_(register_module("fc1", torch::nn::Linear(32 * (s.height / 4) * (s.width / 4), 128))),
        fc2_(register_module("fc2", torch::nn::Linear(128, s.num_classes))) {
    if (s.height < 4 || s.width < 4) throw UsageError("convnet needs images of at least 4x4 pixels");
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
    h = torch::max_pool2d(torch::relu(conv2_->forward(h)), 2);
    h = torch::relu(fc1_->forward(h.flatten(1)));
    return fc2_->forward(h);
  }

 private:
  torch::nn::Conv2d conv1_, conv2_;
  torch::nn::Linear fc1_, fc2_;
};

}  // namespace

std::vector<std::string> model_names() { return {"mlp", "convnet"}; }

std::shared_ptr<Model> make_model(const std::string& name, const ModelSpec& spec) {
  if (spec.num_classes < 2) throw UsageError("a model needs at least 2 classes");
  if (name == "mlp") return std::make_shared<Mlp>(spec);
  if (name == "convnet") return std::make_shared<ConvNet>(spec);
  throw UsageError(fmt::format("unknown model '{}' (choose one of: mlp, convnet)", name));
}

}  // namespace efsign
