// efsign/models.h — the models efsign trains. Every model maps a float batch
// [B, C, H, W] to logits [B, num_classes]; its parameters() order is the layer order
// of the wire format (one layer per parameter tensor).
#pragma once

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

// name: "mlp" or "convnet". Throws UsageError for unknown names.
std::shared_ptr<Model> make_model(const std::string& name, const ModelSpec& spec);
std::vector<std::string> model_names();

}  // namespace efsign
