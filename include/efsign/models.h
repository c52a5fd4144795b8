// efsign/models.h — the models efsign trains. Every model maps a float batch
// [B, C, H, W] to logits [B, num_classes]; its parameters() order is the layer order
// of the wire format (one layer per parameter tensor).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

namespace efsign {

struct ModelSpec {
  int64_t channels = 1, height = 28, width = 28, num_classes = 10;
};

class Model : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};

// name: "mlp", "convnet", "resnet18" or "vgg19" (kuangliu's CIFAR variants, with
// BatchNorm; their running statistics are buffers, not parameters, and stay rank-local).
// Throws UsageError for unknown names.
std::shared_ptr<Model> make_model(const std::string& name, const ModelSpec& spec);
std::vector<std::string> model_names();

// One row per parameter tensor, in parameters() order (= the wire format's layers):
// the dotted module path (e.g. "layer1.0.conv1.weight"), its shape and element count.
struct LayerInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t params = 0;
};
std::vector<LayerInfo> describe_layers(Model& model);

}  // namespace efsign
