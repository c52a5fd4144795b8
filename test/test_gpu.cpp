// [gpu] The CUDA codec on a real GPU: the conformance checks test_device_codec.cpp runs
// on the emulation (test/codec_conformance.h), then the optimizers with parameters on
// the GPU against the host codec on the CPU from the same dyadic gradients (exact
// arithmetic: bit-identical results), over a one-rank NCCL communicator, with and
// without --overlap; under mpirun ([gpu][mpi], 2 or 4 ranks sharing one GPU) over MPI
// through pinned host buffers: replicas identical and equal to the host codec's run.
// Skips with a visible message without a CUDA device or with a CPU-only LibTorch.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cuda_runtime_api.h>

#include "codec_conformance.h"
#include "efsign/transport.h"
#include "test_torch_util.h"

using namespace efsign;
using namespace efsign::test;

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

#define SKIP_WITHOUT_GPU()          \
  do {                              \
    std::string why_;               \
    if (!have_gpu(&why_)) {         \
      WARN("SKIPPED: " << why_);    \
      return;                       \
    }                               \
  } while (0)

struct Case {
  OptimizerKind kind;
  ExchangeKind ex;
  bool overlap;
};
const Case kCases[] = {{OptimizerKind::kEfSignSgd, ExchangeKind::kAllgather, false},
                       {OptimizerKind::kEfSignSgd, ExchangeKind::kAllgather, true},
                       {OptimizerKind::kEfSignSgd, ExchangeKind::kTwoPhase, false},
                       {OptimizerKind::kSignum, ExchangeKind::kVote, true},
                       {OptimizerKind::kSgdm, ExchangeKind::kAllgather, false},
                       {OptimizerKind::kSgdm, ExchangeKind::kAllgather, true}};

}  // namespace

TEST_CASE("the CUDA codec on the GPU: compress, decode, error-from-state equal the host codec", "[gpu]") {
  SKIP_WITHOUT_GPU();
  check_codec_operations(make_cuda_codec(0));
}

TEST_CASE("the CUDA codec on the GPU: sgdm's flatten + update, gathers, the non-finite check", "[gpu]") {
  SKIP_WITHOUT_GPU();
  check_codec_dense_operations(make_cuda_codec(0));
}

TEST_CASE("one rank on the GPU, over NCCL and over the host communicator: bit-identical to the host codec", "[gpu]") {
  SKIP_WITHOUT_GPU();
  auto& comm = world();
  REQUIRE(comm.size() == 1);
  auto self = std::make_shared<SelfCommunicator>();
  auto nccl = make_data_communicator(comm, TransportOptions{Transport::kNccl, 0, 60.0});
  for (const Case& k : kCases) {
    INFO(optimizer_name(k.kind) << " / " << exchange_kind_name(k.ex) << (k.overlap ? " / overlap" : ""));
    const OptimizerConfig cfg = config(k.kind, k.ex, 0.25, k.overlap);
    const Run cpu = run_steps(cfg, make_host_codec(codec::Isa::kPortable), self, self, 4);
    const Run gpu_nccl = run_steps(cfg, nullptr, nccl, world_ptr(), 4, at::Device(at::kCUDA, 0));
    const Run gpu_self = run_steps(cfg, nullptr, self, self, 4, at::Device(at::kCUDA, 0));
    CHECK(bytes_of(gpu_nccl.params) == bytes_of(cpu.params));
    CHECK(bytes_of(gpu_self.params) == bytes_of(cpu.params));
    CHECK(gpu_nccl.stats.back().bytes_sent == cpu.stats.back().bytes_sent);
    if (k.overlap)
      for (const StepStats& st : gpu_nccl.stats) CHECK(st.buckets > 1);
  }
}

TEST_CASE("ranks sharing one GPU over MPI: replicas bit-identical, equal to the host codec's run", "[gpu][mpi]") {
  SKIP_WITHOUT_GPU();
  auto& comm = world();
  auto data = make_data_communicator(comm, TransportOptions{});
  for (const Case& k : kCases) {
    INFO(optimizer_name(k.kind) << " / " << exchange_kind_name(k.ex) << (k.overlap ? " / overlap" : ""));
    const OptimizerConfig cfg = config(k.kind, k.ex, 0.25, k.overlap);
    const Run cpu = run_steps(cfg, make_host_codec(codec::Isa::kPortable), data, world_ptr(), 5);
    const Run gpu = run_steps(cfg, nullptr, data, world_ptr(), 5, at::Device(at::kCUDA, 0));
    const std::vector<uint8_t> bytes = bytes_of(gpu.params);
    CHECK(same_on_all_ranks(bytes));
    CHECK(bytes == bytes_of(cpu.params));
  }
}
