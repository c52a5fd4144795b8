// Distributed optimizers through their public objects: the paper's identities and
// counterexamples on one rank, and replica agreement under mpirun ([mpi]).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "efsign/error.h"
#include "efsign/models.h"
#include "efsign/optimizer.h"
#include "test_torch_util.h"

using namespace efsign;
using efsign::test::bytes_of;
using efsign::test::make_params;
using efsign::test::same_on_all_ranks;

namespace {

OptimizerConfig config(OptimizerKind kind, double lr, double momentum = 0.9, double wd = 0.0) {
  OptimizerConfig c;
  c.kind = kind;
  c.lr = lr;
  c.momentum = momentum;
  c.weight_decay = wd;
  return c;
}

void set_grad(at::Tensor& p, const at::Tensor& g) { p.mutable_grad() = g.clone(); }


}  // namespace

TEST_CASE("one rank, no weight decay: x_t - e_t equals plain SGD's iterate (virtual iterate)", "[optim]") {
  auto self = std::make_shared<SelfCommunicator>();
  auto params = make_params({1000, 37, 3}, 1);
  std::vector<at::Tensor> x0, sgd;
  for (auto& p : params) x0.push_back(p.detach().clone());
  for (auto& p : params) sgd.push_back(p.detach().clone());
  const double lr = 0.1;
  auto opt = make_optimizer(params, self, self, config(OptimizerKind::kEfSignSgd, lr));
  torch::manual_seed(2);
  for (int t = 0; t < 100; ++t) {
    for (std::size_t l = 0; l < params.size(); ++l) {
      at::Tensor g = torch::randn_like(params[l]) * (1.0 + l);
      set_grad(params[l], g);
      sgd[l] -= lr * g;
    }
    opt->step();
  }
  const auto errors = opt->error_buffers();
  REQUIRE(errors.size() == params.size());
  double worst = 0, error_norm = 0, moved = 0;
  for (std::size_t l = 0; l < params.size(); ++l) {
    worst = std::max(worst, (params[l].detach() - errors[l] - sgd[l]).abs().max().item<double>());
    error_norm += errors[l].norm().item<double>();
    moved += (params[l].detach() - x0[l]).abs().max().item<double>();
  }
  CHECK(worst < 1e-4);
  CHECK(error_norm > 0.1);  // the error is not trivially zero...
  CHECK(moved > 0.1);       // ...and the parameters did move
}

TEST_CASE("without error feedback (signsgd) the iterate leaves SGD's path", "[optim]") {
  auto self = std::make_shared<SelfCommunicator>();
  auto params = make_params({1000}, 1);
  at::Tensor sgd = params[0].detach().clone();
  auto opt = make_optimizer(params, self, self, config(OptimizerKind::kSignSgd, 0.1));
  CHECK(opt->error_buffers().empty());
  torch::manual_seed(2);
  for (int t = 0; t < 100; ++t) {
    at::Tensor g = torch::randn_like(params[0]);
    set_grad(params[0], g);
    sgd -= 0.1 * g;
    opt->step();
  }
  CHECK((params[0].detach() - sgd).abs().max().item<double>() > 0.1);
}

TEST_CASE("counterexample 1: f(x) = x/4 on [-1,1]; sign SGD goes the wrong way, EF-SignSGD converges", "[optim]") {
  // g = 4 w.p. 1/4, else -1 (E[g] = 1/4). The unscaled sign (signum without momentum:
  // Delta = lr * sign(g)) moves +lr/2 per step in expectation. For d = 1 the scaled sign
  // compressor is exact, so EF-SignSGD behaves like SGD and reaches x* = -1.
  auto run = [](OptimizerKind kind) {
    auto self = std::make_shared<SelfCommunicator>();
    std::vector<at::Tensor> params{torch::zeros({1}).requires_grad_(true)};
    auto opt = make_optimizer(params, self, self, config(kind, 0.01, /*momentum=*/0.0));
    std::mt19937 rng(3);
    double tail_mean = 0;
    const int steps = 4000, tail = 1000;
    for (int t = 0; t < steps; ++t) {
      const float g = (rng() % 4 == 0) ? 4.0f : -1.0f;
      set_grad(params[0], torch::full({1}, g));
      opt->step();
      torch::NoGradGuard ng;
      params[0].clamp_(-1.0, 1.0);  // the constraint set
      if (t >= steps - tail) tail_mean += params[0].item<double>() / tail;
    }
    return tail_mean;
  };
  const double sign_x = run(OptimizerKind::kSignum);
  const double ef_x = run(OptimizerKind::kEfSignSgd);
  INFO("sign SGD mean x " << sign_x << ", EF-SignSGD mean x " << ef_x);
  CHECK(sign_x > 0.5);   // f increases: the wrong direction
  CHECK(ef_x < -0.5);    // near the minimum x* = -1
}

TEST_CASE("counterexample 2: signSGD stays on x1 + x2 = 2, EF-SignSGD reaches the optimum", "[optim]") {
  // f(x) = eps |x1 + x2| + |x1 - x2| from (1, 1); subgradient with sign(0) = +1.
  const float eps = 0.5f;
  auto f = [&](const at::Tensor& x) {
    const float a = x[0].item<float>(), b = x[1].item<float>();
    return eps * std::fabs(a + b) + std::fabs(a - b);
  };
  auto run = [&](OptimizerKind kind, float* sum_drift) {
    auto self = std::make_shared<SelfCommunicator>();
    std::vector<at::Tensor> params{torch::ones({2}).requires_grad_(true)};
    auto opt = make_optimizer(params, self, self, config(kind, 0.1, 0.0));
    float drift = 0;
    for (int t = 0; t < 3000; ++t) {
      opt->set_lr(0.1 / std::sqrt(t + 1.0));
      const float a = params[0][0].item<float>(), b = params[0][1].item<float>();
      const float s1 = (a + b) >= 0 ? 1.0f : -1.0f, s2 = (a - b) >= 0 ? 1.0f : -1.0f;
      set_grad(params[0], torch::tensor({eps * s1 + s2, eps * s1 - s2}));
      opt->step();
      drift = std::max(drift, std::fabs(params[0][0].item<float>() + params[0][1].item<float>() - 2.0f));
    }
    *sum_drift = drift;
    return f(params[0].detach());
  };
  float sign_drift = 0, ef_drift = 0;
  const float f0 = 2 * eps;
  const float f_sign = run(OptimizerKind::kSignSgd, &sign_drift);
  const float f_ef = run(OptimizerKind::kEfSignSgd, &ef_drift);
  INFO("f(x0) " << f0 << ", signSGD f " << f_sign << " (max |x1+x2-2| " << sign_drift << "), EF f " << f_ef);
  CHECK(sign_drift < 1e-5f);
  CHECK(f_sign >= 0.999f * f0);  // never below f(x0), up to float rounding
  CHECK(f_ef < 0.1f * f0);
}

TEST_CASE("bad optimizer settings are clear errors", "[optim]") {
  auto self = std::make_shared<SelfCommunicator>();
  auto params = make_params({10}, 1);
  CHECK_THROWS_AS(make_optimizer(params, self, self, config(OptimizerKind::kSgdm, -0.1)), UsageError);
  CHECK_THROWS_AS(make_optimizer(params, self, self, config(OptimizerKind::kSgdm, 0.1, 1.5)), UsageError);
  CHECK_THROWS_AS(parse_optimizer("adam"), UsageError);
  for (const auto& name : optimizer_names()) CHECK(optimizer_name(parse_optimizer(name)) == name);
}

TEST_CASE("bytes handed to the communicator: the wire format for signs, 4 bytes a parameter (and a layer) for sgdm",
          "[optim]") {
  auto self = std::make_shared<SelfCommunicator>();
  for (auto kind : {OptimizerKind::kSgdm, OptimizerKind::kSignSgd, OptimizerKind::kSignum, OptimizerKind::kEfSignSgd}) {
    auto params = make_params({100000, 33, 1}, 1);
    auto opt = make_optimizer(params, self, self, config(kind, 0.01));
    for (auto& p : params) set_grad(p, torch::ones_like(p));
    opt->step();
    // sgdm: every gradient element and one presence count per layer (exchange.h).
    const int64_t want = kind == OptimizerKind::kSgdm ? 4 * (100000 + 33 + 1) + 4 * 3
                                                      : 4 * (3125 + 2 + 1) + 4 * 3;
    CHECK(opt->last_step().bytes_sent == want);
    CHECK(opt->last_step().calls == 1);
    CHECK(opt->handed_bytes_per_step() == want);
  }
}

TEST_CASE("after 50 steps of each optimizer every replica is bit-identical", "[mpi][optim]") {
  auto& comm = test::world();
  for (auto kind : {OptimizerKind::kSgdm, OptimizerKind::kSignSgd, OptimizerKind::kSignum, OptimizerKind::kEfSignSgd}) {
    INFO("optimizer " << optimizer_name(kind));
    torch::manual_seed(5);
    auto model = make_model("mlp", ModelSpec{});
    const auto before = bytes_of(model->parameters());
    auto opt = make_optimizer(model->parameters(), test::world_ptr(), test::world_ptr(), config(kind, 0.01, 0.9, 5e-4));
    torch::manual_seed(100 + comm.rank());  // every rank sees different data
    for (int t = 0; t < 50; ++t) {
      at::Tensor x = torch::randn({16, 1, 28, 28});
      at::Tensor y = torch::randint(0, 10, {16});
      model->zero_grad();
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
      opt->step();
    }
    const auto after = bytes_of(model->parameters());
    CHECK(after != before);
    CHECK(same_on_all_ranks(after));
  }
}

TEST_CASE("sgdm over W ranks equals single-process SGD on the concatenated batch (MLP)", "[mpi][optim]") {
  auto& comm = test::world();
  const int W = comm.size();
  const int64_t B = 8;
  torch::manual_seed(9);
  auto dist = make_model("mlp", ModelSpec{});
  torch::manual_seed(9);
  auto ref = make_model("mlp", ModelSpec{});
  auto opt = make_optimizer(dist->parameters(), test::world_ptr(), test::world_ptr(), config(OptimizerKind::kSgdm, 0.05, 0.9, 5e-4));
  auto self = std::make_shared<SelfCommunicator>();
  auto ref_opt = make_optimizer(ref->parameters(), self, self, config(OptimizerKind::kSgdm, 0.05, 0.9, 5e-4));
  torch::manual_seed(10);  // same global batches on every rank
  for (int t = 0; t < 10; ++t) {
    at::Tensor x = torch::randn({W * B, 1, 28, 28});
    at::Tensor y = torch::randint(0, 10, {W * B});
    dist->zero_grad();
    torch::nn::functional::cross_entropy(dist->forward(x.narrow(0, comm.rank() * B, B)),
                                         y.narrow(0, comm.rank() * B, B))
        .backward();
    opt->step();
    ref->zero_grad();
    torch::nn::functional::cross_entropy(ref->forward(x), y).backward();
    ref_opt->step();
  }
  double worst = 0;
  auto a = dist->parameters(), b = ref->parameters();
  for (std::size_t l = 0; l < a.size(); ++l) worst = std::max(worst, (a[l] - b[l]).abs().max().item<double>());
  INFO("max |distributed - single process| = " << worst);
  CHECK(worst < 1e-5);
}

TEST_CASE("a layer table that differs across ranks is an error on every rank", "[mpi][optim]") {
  auto& comm = test::world();
  auto params = make_params({100, comm.rank() == 1 ? int64_t{7} : int64_t{8}}, 1);
  CHECK_THROWS_AS(make_optimizer(params, test::world_ptr(), test::world_ptr(), config(OptimizerKind::kEfSignSgd, 0.1)), AgreedError);
  auto same = make_params({100, 8}, 1);
  CHECK_NOTHROW(make_optimizer(same, test::world_ptr(), test::world_ptr(), config(OptimizerKind::kEfSignSgd, 0.1)));
}

TEST_CASE("a NaN in one rank's gradient: every rank skips the step, replicas stay identical", "[mpi][optim]") {
  auto& comm = test::world();
  for (auto kind : {OptimizerKind::kSgdm, OptimizerKind::kSignSgd, OptimizerKind::kSignum, OptimizerKind::kEfSignSgd}) {
    INFO("optimizer " << optimizer_name(kind));
    torch::manual_seed(5);
    auto model = make_model("mlp", ModelSpec{});
    auto opt = make_optimizer(model->parameters(), test::world_ptr(), test::world_ptr(), config(kind, 0.01));
    torch::manual_seed(100 + comm.rank());
    int skipped = 0;
    for (int t = 0; t < 6; ++t) {
      model->zero_grad();
      torch::nn::functional::cross_entropy(model->forward(torch::randn({8, 1, 28, 28})), torch::randint(0, 10, {8}))
          .backward();
      const bool poison = t == 3 && comm.rank() == comm.size() - 1;  // the test-only injection
      if (poison) model->parameters()[0].mutable_grad().view(-1)[5] = std::nanf("");
      const auto before = bytes_of(model->parameters());
      std::vector<at::Tensor> e_before = opt->error_buffers();
      opt->step();
      if (opt->last_step().skipped) {
        ++skipped;
        CHECK(bytes_of(model->parameters()) == before);  // nothing applied
        CHECK_THAT(opt->last_step().skip_reason, Catch::Contains("non-finite"));
        if (kind == OptimizerKind::kEfSignSgd && !poison) {
          // A healthy rank keeps all of p = e + lr * g as its error: nothing is lost.
          const auto e_after = opt->error_buffers();
          auto params = model->parameters();
          for (std::size_t l = 0; l < params.size(); ++l)
            CHECK(e_after[l].equal(e_before[l] + params[l].grad() * 0.01f));
        }
      }
    }
    CHECK(skipped == 1);  // on every rank, at the same step
    bool finite = true;
    for (const auto& p : model->parameters()) finite = finite && at::isfinite(p).all().item<bool>();
    CHECK(finite);
    CHECK(same_on_all_ranks(bytes_of(model->parameters())));
  }
}

TEST_CASE("--on-nonfinite abort: every rank raises the same AgreedError", "[mpi][optim]") {
  auto& comm = test::world();
  auto params = make_params({100, 7}, 1);
  OptimizerConfig cfg = config(OptimizerKind::kEfSignSgd, 0.1);
  cfg.on_nonfinite = NonFinitePolicy::kAbort;
  auto opt = make_optimizer(params, test::world_ptr(), test::world_ptr(), cfg);
  for (auto& p : params) set_grad(p, torch::ones_like(p));
  if (comm.rank() == 0) params[1].mutable_grad()[2] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(opt->step(), Catch::Contains("non-finite gradient (NaN or Inf) on rank 0 in layer 1"));
}
