// [gpu] The CUDA optimizers over a one-rank NcclCommunicator against the CPU
// optimizers over the MPI world, for a few MLP steps from identical weights and data,
// for every exchange (two-phase and vote with one rank exercise their whole device
// path: gathers, alltoallv/allgatherv with self, server decode-add, re-compress).
// Skips with a visible message without a CUDA device (or with a CPU-only LibTorch).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cuda_runtime_api.h>

#include "efsign/models.h"
#include "efsign/transport.h"
#include "efsign/optimizer.h"
#include "test_util.h"

using namespace efsign;

namespace {
bool have_gpu(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) *why = cudaGetErrorString(e);
  else if (n == 0) *why = "no CUDA device";
  else if (!torch::cuda::is_available()) *why = "this LibTorch has no CUDA";
  else return true;
  return false;
}
}  // namespace

TEST_CASE("one-rank NCCL training matches the CPU run of the same MLP steps", "[gpu]") {
  std::string why;
  if (!have_gpu(&why)) {
    WARN("SKIPPED: " << why);
    return;
  }
  auto& comm = test::world();
  REQUIRE(comm.size() == 1);
  auto nccl = make_data_communicator(comm, TransportOptions{Transport::kNccl, 0, 60.0});
  struct Case {
    OptimizerKind kind;
    ExchangeKind exchange;
  };
  for (Case c : {Case{OptimizerKind::kEfSignSgd, ExchangeKind::kAllgather}, Case{OptimizerKind::kSgdm, ExchangeKind::kAllgather},
                 Case{OptimizerKind::kSignum, ExchangeKind::kAllgather}, Case{OptimizerKind::kEfSignSgd, ExchangeKind::kTwoPhase},
                 Case{OptimizerKind::kSignum, ExchangeKind::kVote}}) {
    const OptimizerKind kind = c.kind;
    INFO("optimizer " << optimizer_name(kind) << ", exchange " << exchange_kind_name(c.exchange));
    torch::manual_seed(1);
    auto cpu = make_model("mlp", ModelSpec{});
    torch::manual_seed(1);
    auto gpu = make_model("mlp", ModelSpec{});
    gpu->to(torch::kCUDA);
    OptimizerConfig cfg;
    cfg.kind = kind;
    cfg.lr = kind == OptimizerKind::kSignum ? 1e-3 : 0.05;
    cfg.weight_decay = 5e-4;
    cfg.exchange = c.exchange;
    auto cpu_opt = make_optimizer(cpu->parameters(), test::world_ptr(), test::world_ptr(), cfg);
    auto gpu_opt = make_optimizer(gpu->parameters(), nccl, test::world_ptr(), cfg);
    torch::manual_seed(2);
    for (int t = 0; t < 5; ++t) {
      at::Tensor x = torch::randn({32, 1, 28, 28});
      at::Tensor y = torch::randint(0, 10, {32});
      cpu->zero_grad();
      torch::nn::functional::cross_entropy(cpu->forward(x), y).backward();
      cpu_opt->step();
      gpu->zero_grad();
      torch::nn::functional::cross_entropy(gpu->forward(x.cuda()), y.cuda()).backward();
      gpu_opt->step();
      CHECK(gpu_opt->last_step().bytes_sent == cpu_opt->last_step().bytes_sent);
    }
    double worst = 0;
    auto a = cpu->parameters(), b = gpu->parameters();
    for (std::size_t l = 0; l < a.size(); ++l)
      worst = std::max(worst, (a[l] - b[l].cpu()).abs().max().item<double>());
    WARN(optimizer_name(kind) << " / " << exchange_kind_name(c.exchange) << ": max |cpu - gpu| parameter difference after 5 steps = " << worst);
    // The GPU's matmuls differ from the CPU's in rounding; a sign flip of a near-zero
    // p moves one element by 2*s. Bound: far below one step's size.
    CHECK(worst < 1e-2);
  }
}

TEST_CASE("--overlap on the GPU: buckets start during backward and the result is the same bits", "[gpu]") {
  std::string why;
  if (!have_gpu(&why)) {
    WARN("SKIPPED: " << why);
    return;
  }
  auto& comm = test::world();
  REQUIRE(comm.size() == 1);
  auto nccl = make_data_communicator(comm, TransportOptions{Transport::kNccl, 0, 60.0});
  for (ExchangeKind ex : {ExchangeKind::kAllgather, ExchangeKind::kVote}) {
    INFO("exchange " << exchange_kind_name(ex));
    std::vector<at::Tensor> result[2];
    int64_t early = 0, buckets = 0;
    for (int overlap = 0; overlap < 2; ++overlap) {
      torch::manual_seed(1);
      auto gpu = make_model("mlp", ModelSpec{});
      gpu->to(torch::kCUDA);
      OptimizerConfig cfg;
      cfg.kind = OptimizerKind::kEfSignSgd;
      cfg.lr = 0.05;
      cfg.exchange = ex;
      cfg.overlap = overlap == 1;
      cfg.bucket_bytes = 4 << 10;  // three buckets for the MLP
      auto opt = make_optimizer(gpu->parameters(), nccl, test::world_ptr(), cfg);
      torch::manual_seed(2);
      for (int t = 0; t < 5; ++t) {
        at::Tensor x = torch::randn({32, 1, 28, 28}).cuda();
        at::Tensor y = torch::randint(0, 10, {32}).cuda();
        gpu->zero_grad();
        torch::nn::functional::cross_entropy(gpu->forward(x), y).backward();
        opt->step();
        if (overlap) {
          early += opt->last_step().buckets_started_in_backward;
          buckets += opt->last_step().buckets;
        }
      }
      for (auto& p : gpu->parameters()) result[overlap].push_back(p.detach().cpu());
    }
    CHECK(buckets == 5 * 3);
    CHECK(early == buckets);
    for (std::size_t l = 0; l < result[0].size(); ++l) CHECK(at::equal(result[0][l], result[1][l]));
  }
}
