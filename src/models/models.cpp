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

// kuangliu/pytorch-cifar BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU after
// the add. The shortcut is a 1x1 conv (no bias) + BN when the stride or the width changes.
class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride)
      : conv1_(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_planes, planes, 3)
                                                                  .stride(stride)
                                                                  .padding(1)
                                                                  .bias(false)))),
        bn1_(register_module("bn1", torch::nn::BatchNorm2d(planes))),
        conv2_(register_module(
            "conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(planes, planes, 3).stride(1).padding(1).bias(false)))),
        bn2_(register_module("bn2", torch::nn::BatchNorm2d(planes))) {
    if (stride != 1 || in_planes != planes) {
      shortcut_ = register_module(
          "shortcut",
          torch::nn::Sequential(
              torch::nn::Conv2d(torch::nn::Conv2dOptions(in_planes, planes, 1).stride(stride).bias(false)),
              torch::nn::BatchNorm2d(planes)));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor out = torch::relu(bn1_->forward(conv1_->forward(x)));
    out = bn2_->forward(conv2_->forward(out));
    out = out + (shortcut_.is_empty() ? x : shortcut_->forward(x));
    return torch::relu(out);
  }

 private:
  torch::nn::Conv2d conv1_;
  torch::nn::BatchNorm2d bn1_;
  torch::nn::Conv2d conv2_;
  torch::nn::BatchNorm2d bn2_;
  torch::nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(BasicBlock);

// kuangliu's CIFAR ResNet-18: 3x3 stem without max-pool, 4 stages of 2 BasicBlocks,
// global average pool, one Linear. 11,220,132 parameters for 100 classes.
class ResNet18 final : public Model {
 public:
  explicit ResNet18(const ModelSpec& s)
      : conv1_(register_module(
            "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(s.channels, 64, 3).stride(1).padding(1).bias(false)))),
        bn1_(register_module("bn1", torch::nn::BatchNorm2d(64))),
        layer1_(register_module("layer1", make_layer(64, 1))),
        layer2_(register_module("layer2", make_layer(128, 2))),
        layer3_(register_module("layer3", make_layer(256, 2))),
        layer4_(register_module("layer4", make_layer(512, 2))),
        linear_(register_module("linear", torch::nn::Linear(512, s.num_classes))) {
    if (s.height < 8 || s.width < 8) throw UsageError("resnet18 needs images of at least 8x8 pixels");
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor out = torch::relu(bn1_->forward(conv1_->forward(x)));
    out = layer4_->forward(layer3_->forward(layer2_->forward(layer1_->forward(out))));
    // Global average pool (kuangliu's avg_pool2d(out, 4) on 32x32 inputs).
    out = torch::adaptive_avg_pool2d(out, {1, 1}).flatten(1);
    return linear_->forward(out);
  }

 private:
  torch::nn::Sequential make_layer(int64_t planes, int64_t stride) {
    torch::nn::Sequential seq;
    for (int64_t st : {stride, int64_t{1}}) {
      seq->push_back(BasicBlock(in_planes_, planes, st));
      in_planes_ = planes;
    }
    return seq;
  }

  int64_t in_planes_ = 64;  // declared before the layers: used while they are built
  torch::nn::Conv2d conv1_;
  torch::nn::BatchNorm2d bn1_;
  torch::nn::Sequential layer1_, layer2_, layer3_, layer4_;
  torch::nn::Linear linear_;
};

// kuangliu's CIFAR VGG-19: every 3x3 conv (with bias) is followed by BatchNorm and
// ReLU; "M" is a 2x2 max-pool; then AvgPool(1, 1) (a no-op) and one Linear(512, C).
class Vgg19 final : public Model {
 public:
  explicit Vgg19(const ModelSpec& s)
      : features_(register_module("features", make_features(s.channels))),
        classifier_(register_module("classifier", torch::nn::Linear(512, s.num_classes))) {
    if (s.height != 32 || s.width != 32) throw UsageError("vgg19 needs 32x32 images (five 2x2 max-pools to 1x1)");
  }
  at::Tensor forward(const at::Tensor& x) override {
    return classifier_->forward(features_->forward(x).flatten(1));
  }

 private:
  static torch::nn::Sequential make_features(int64_t in_channels) {
    static const int64_t kCfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0,
                                   512, 512, 512, 512, 0, 512, 512, 512, 512, 0};  // 0 = "M"
    torch::nn::Sequential seq;
    int64_t in = in_channels;
    for (int64_t c : kCfg) {
      if (c == 0) {
        seq->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
      } else {
        seq->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, c, 3).padding(1)));
        seq->push_back(torch::nn::BatchNorm2d(c));
        seq->push_back(torch::nn::ReLU());
        in = c;
      }
    }
    seq->push_back(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(1).stride(1)));
    return seq;
  }

  torch::nn::Sequential features_;
  torch::nn::Linear classifier_;
};

}  // namespace

std::vector<std::string> model_names() { return {"mlp", "convnet", "resnet18", "vgg19"}; }

std::shared_ptr<Model> make_model(const std::string& name, const ModelSpec& spec) {
  if (spec.num_classes < 2) throw UsageError("a model needs at least 2 classes");
  if (name == "mlp") return std::make_shared<Mlp>(spec);
  if (name == "convnet") return std::make_shared<ConvNet>(spec);
  if (name == "resnet18") return std::make_shared<ResNet18>(spec);
  if (name == "vgg19") return std::make_shared<Vgg19>(spec);
  throw UsageError(fmt::format("unknown model '{}' (choose one of: mlp, convnet, resnet18, vgg19)", name));
}

std::vector<LayerInfo> describe_layers(Model& model) {
  std::vector<LayerInfo> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const at::Tensor& p = item.value();
    out.push_back(LayerInfo{item.key(), p.sizes().vec(), p.numel()});
  }
  return out;
}

}  // namespace efsign
