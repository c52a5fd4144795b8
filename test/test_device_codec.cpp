// The CUDA codec's code path, run in every CI run: src/compress/cuda_codec.cpp (layer
// sets, pinned staging, events, the kernels) against the CUDA emulation
// (make_emulated_cuda_codec), compared with the host codec — operation by operation,
// and through the very optimizers, exchanges and communicators the trainer uses: every
// exchange, sgdm, --overlap, a parameter without a gradient, non-finite skips, and
// under mpirun ([mpi]) the MPI transport through host staging buffers (what ranks
// sharing one GPU run).
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "efsign/codec.h"
#include "efsign/error.h"
#include "efsign/exchange.h"
#include "efsign/models.h"
#include "efsign/optimizer.h"
#include "efsign/transport.h"
#include "codec_conformance.h"
#include "test_torch_util.h"

using namespace efsign;
using namespace efsign::test;
using efsign::test::bytes_of;
using efsign::test::make_params;
using efsign::test::same_on_all_ranks;
using efsign::test::world;
using efsign::test::world_ptr;

TEST_CASE("the emulated CUDA codec: compress, decode (apply, add, vote), error-from-state equal the host codec",
          "[device]") {
  auto dev = make_emulated_cuda_codec();
  CHECK(dev->emulated());
  check_codec_operations(dev);
}

TEST_CASE("the emulated CUDA codec: sgdm's flatten + update, gathers and the non-finite check equal the host's",
          "[device]") {
  check_codec_dense_operations(make_emulated_cuda_codec());
}

TEST_CASE("one rank: the optimizers on the emulated CUDA codec end bit-identical to the host codec", "[device]") {
  auto self = std::make_shared<SelfCommunicator>();
  struct Case {
    OptimizerKind kind;
    ExchangeKind ex;
    bool overlap;
  };
  for (Case k : {Case{OptimizerKind::kEfSignSgd, ExchangeKind::kAllgather, false},
                 Case{OptimizerKind::kEfSignSgd, ExchangeKind::kTwoPhase, false},
                 Case{OptimizerKind::kSignum, ExchangeKind::kVote, false},
                 Case{OptimizerKind::kSignSgd, ExchangeKind::kAllgather, true},
                 Case{OptimizerKind::kSgdm, ExchangeKind::kAllgather, false},
                 Case{OptimizerKind::kSgdm, ExchangeKind::kAllgather, true}}) {
    INFO(optimizer_name(k.kind) << " / " << exchange_kind_name(k.ex) << (k.overlap ? " / overlap" : ""));
    const OptimizerConfig cfg = config(k.kind, k.ex, 0.25, k.overlap);
    const Run a = run_steps(cfg, make_host_codec(codec::Isa::kPortable), self, self, 4);
    const Run b = run_steps(cfg, make_emulated_cuda_codec(), self, self, 4);
    CHECK(bytes_of(a.params) == bytes_of(b.params));
    CHECK(b.stats.back().bytes_sent == a.stats.back().bytes_sent);
  }
}

TEST_CASE("a parameter without a gradient is skipped: no weight decay, its state untouched", "[device]") {
  auto self = std::make_shared<SelfCommunicator>();
  for (auto codec : {make_host_codec(codec::Isa::kPortable), make_emulated_cuda_codec()}) {
    for (OptimizerKind kind : {OptimizerKind::kEfSignSgd, OptimizerKind::kSgdm, OptimizerKind::kSignum}) {
      INFO(codec->describe() << ", " << optimizer_name(kind));
      auto params = make_params({100, 10}, 4);
      auto opt = make_optimizer(params, self, self, config(kind, ExchangeKind::kAllgather, 0.1), codec);
      const at::Tensor frozen = params[1].detach().clone();
      for (int s = 0; s < 3; ++s) {
        params[0].mutable_grad() = torch::ones_like(params[0]);
        params[1].mutable_grad() = at::Tensor();
        opt->step();
      }
      CHECK(at::equal(params[1].detach(), frozen));  // weight decay would have shrunk it
      CHECK_FALSE(at::equal(params[0].detach(), make_params({100, 10}, 4)[0].detach()));
    }
  }
}

TEST_CASE("the optimizer shares its communicators' and codec's ownership: dropping every other handle is safe",
          "[device]") {
  // With the CUDA codec an optimizer's destructor waits for its stream and frees device
  // buffers, and a bucket launched by a backward whose step() never came may still be
  // in flight: the optimizer must keep alive what it uses (AddressSanitizer would catch a
  // use after free here: launch/test.sh --asan).
  auto params = make_params(kSizes, 5);
  std::unique_ptr<DistributedOptimizer> opt;
  {
    auto self = std::make_shared<SelfCommunicator>();
    opt = make_optimizer(params, self, self, config(OptimizerKind::kEfSignSgd, ExchangeKind::kTwoPhase, 0.1, true),
                         make_emulated_cuda_codec());
  }  // the communicator and the codec now live only inside the optimizer
  auto x = params[0];
  (x * x).sum().backward();  // starts a bucket on the communication thread, no step()
  for (std::size_t l = 1; l < params.size(); ++l) params[l].mutable_grad() = torch::ones_like(params[l]);
  opt->step();
  (params[5].sum() + params[6].sum()).backward();  // the last bucket starts: in flight when the optimizer goes
  opt.reset();
  SUCCEED("destroyed with work in flight");
}

TEST_CASE("ranks sharing one GPU over MPI (staging through host buffers): replicas bit-identical, equal to the host "
          "codec", "[mpi][device]") {
  auto& comm = world();
  struct Case {
    OptimizerKind kind;
    ExchangeKind ex;
    bool overlap;
  };
  for (Case k : {Case{OptimizerKind::kEfSignSgd, ExchangeKind::kAllgather, false},
                 Case{OptimizerKind::kEfSignSgd, ExchangeKind::kTwoPhase, true},
                 Case{OptimizerKind::kSignSgd, ExchangeKind::kVote, false},
                 Case{OptimizerKind::kSgdm, ExchangeKind::kAllgather, false}}) {
    INFO(optimizer_name(k.kind) << " / " << exchange_kind_name(k.ex) << (k.overlap ? " / overlap" : ""));
    const OptimizerConfig cfg = config(k.kind, k.ex, 0.25, k.overlap);
    auto data = make_data_communicator(comm, TransportOptions{});
    const Run a = run_steps(cfg, make_host_codec(codec::Isa::kPortable), data, world_ptr(), 5);
    const Run b = run_steps(cfg, make_emulated_cuda_codec(), data, world_ptr(), 5);
    const std::vector<uint8_t> bytes = bytes_of(b.params);
    CHECK(same_on_all_ranks(bytes));
    CHECK(bytes == bytes_of(a.params));
    CHECK(b.stats.back().wire_bytes == a.stats.back().wire_bytes);
  }
}
