// Models: parameter counts against the reference implementations, forward shapes,
// describe_layers(), and replica agreement for resnet18 under mpirun ([mpi]).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstring>
#include <numeric>

#include "efsign/error.h"
#include "efsign/models.h"
#include "efsign/optimizer.h"
#include "model_tables.h"  // kernels/: the size lists the kernel tests and benchmarks use
#include "test_torch_util.h"

using namespace efsign;
using efsign::test::bytes_of;
using efsign::test::same_on_all_ranks;

namespace {

int64_t count_params(Model& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

std::vector<int64_t> param_sizes(Model& m) {
  std::vector<int64_t> s;
  for (const auto& p : m.parameters()) s.push_back(p.numel());
  return s;
}


const ModelSpec kCifar10{3, 32, 32, 10};
const ModelSpec kCifar100{3, 32, 32, 100};

}  // namespace

TEST_CASE("parameter counts match the reference models", "[models]") {
  // kuangliu/pytorch-cifar ResNet18(num_classes=100) and VGG('VGG19') (10 classes).
  CHECK(count_params(*make_model("resnet18", kCifar100)) == 11220132);
  CHECK(count_params(*make_model("resnet18", kCifar10)) == 11173962);
  CHECK(count_params(*make_model("vgg19", kCifar10)) == 20040522);
  // Unchanged small models (Fashion-MNIST shape).
  CHECK(count_params(*make_model("mlp", ModelSpec{})) == 235146);
  CHECK(count_params(*make_model("convnet", ModelSpec{})) == 215370);
}

TEST_CASE("kernels/model_tables.h lists make_model's parameter sizes in parameters() order", "[models]") {
  // The kernel tests and benchmarks use these lists as "ResNet-18" and "VGG-19"; the models
  // are the truth, so any drift (a tensor added, dropped, resized or reordered) fails here.
  for (const ModelSpec& spec : {kCifar10, kCifar100}) {
    INFO(spec.num_classes << " classes");
    CHECK(kernels::resnet18_cifar_sizes(spec.num_classes) == param_sizes(*make_model("resnet18", spec)));
    CHECK(kernels::vgg19_bn_cifar_sizes(spec.num_classes) == param_sizes(*make_model("vgg19", spec)));
  }
}

TEST_CASE("resnet18 and vgg19 map [2,3,32,32] to logits [2,C]", "[models]") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  const at::Tensor x = torch::randn({2, 3, 32, 32});
  for (const char* name : {"resnet18", "vgg19"}) {
    for (const ModelSpec& spec : {kCifar10, kCifar100}) {
      INFO(name << " with " << spec.num_classes << " classes");
      auto m = make_model(name, spec);
      m->train();
      at::Tensor y = m->forward(x);
      CHECK(y.sizes() == at::IntArrayRef({2, spec.num_classes}));
      CHECK(torch::isfinite(y).all().item<bool>());
      m->eval();
      CHECK(m->forward(x).sizes() == at::IntArrayRef({2, spec.num_classes}));
    }
  }
}

TEST_CASE("model_names lists every model and unknown names are a UsageError", "[models]") {
  const auto names = model_names();
  CHECK(names == std::vector<std::string>{"mlp", "convnet", "resnet18", "vgg19"});
  for (const auto& n : names) CHECK_NOTHROW(make_model(n, kCifar10));
  try {
    make_model("resnet50", kCifar10);
    FAIL("no exception");
  } catch (const UsageError& e) {
    CHECK_THAT(e.what(), Catch::Contains("resnet50") && Catch::Contains("resnet18") && Catch::Contains("vgg19"));
  }
}

TEST_CASE("describe_layers follows parameters() order and sums to the total", "[models]") {
  for (const char* name : {"mlp", "convnet", "resnet18", "vgg19"}) {
    INFO(name);
    auto m = make_model(name, std::string(name) == "mlp" || std::string(name) == "convnet" ? ModelSpec{} : kCifar100);
    const auto rows = describe_layers(*m);
    const auto params = m->parameters();
    REQUIRE(rows.size() == params.size());
    int64_t total = 0;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      CHECK(rows[i].shape == params[i].sizes().vec());
      CHECK(rows[i].params == params[i].numel());
      CHECK(!rows[i].name.empty());
      total += rows[i].params;
    }
    CHECK(total == count_params(*m));
  }
  auto r = make_model("resnet18", kCifar100);
  const auto rows = describe_layers(*r);
  // 1 stem conv + 1 BN (2) + 8 blocks x (2 conv + 2 BN x 2) + 3 shortcuts x (conv + BN x 2) + linear (2).
  CHECK(rows.size() == 62);
  CHECK(rows.front().name == "conv1.weight");
  CHECK(rows.front().shape == std::vector<int64_t>{64, 3, 3, 3});
  CHECK(rows[3].name == "layer1.0.conv1.weight");
  CHECK(rows.back().name == "linear.bias");
  CHECK(rows.back().shape == std::vector<int64_t>{100});
  auto v = make_model("vgg19", kCifar10);
  const auto vrows = describe_layers(*v);
  CHECK(vrows.size() == 16 * 4 + 2);
  CHECK(vrows.front().name == "features.0.weight");
  CHECK(vrows.back().name == "classifier.bias");
}

TEST_CASE("resnet18 with ef-signsgd: replicas' parameters stay bit-identical", "[mpi][models]") {
  auto& comm = test::world();
  torch::manual_seed(7);  // same initialisation on every rank
  auto model = make_model("resnet18", kCifar100);
  model->train();
  const auto before = bytes_of(model->parameters());
  REQUIRE(same_on_all_ranks(before));
  OptimizerConfig cfg;
  cfg.kind = OptimizerKind::kEfSignSgd;
  cfg.lr = 0.01;
  auto opt = make_optimizer(model->parameters(), test::world_ptr(), test::world_ptr(), cfg);
  torch::manual_seed(100 + comm.rank());  // every rank sees different data
  for (int t = 0; t < 3; ++t) {
    at::Tensor x = torch::randn({4, 3, 32, 32});
    at::Tensor y = torch::randint(0, 100, {4});
    model->zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    opt->step();
  }
  const auto after = bytes_of(model->parameters());
  CHECK(after != before);
  CHECK(same_on_all_ranks(after));
  // Only parameters are compared. BatchNorm running_mean / running_var are buffers
  // updated from each rank's own batch, so they are rank-local (as in DDP without
  // SyncBatchNorm) and differ across ranks here; whether to sync them (e.g. before
  // evaluation) is the trainer's decision.
  if (comm.size() > 1) CHECK_FALSE(same_on_all_ranks(bytes_of(model->buffers())));
}
