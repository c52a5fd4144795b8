// efsign-bench: measurements a user needs to decide whether efsign pays off. Four
// tools, one per file (bench_comm.cpp, bench_codec.cpp, bench_loader.cpp,
// bench_step.cpp); each has --help.
//
//   mpirun -np W efsign-bench comm [-b 1e3] [-e 1e8] [-f 10] [--iters 20] [--warmup 3]
//                                  [--device cpu|cuda] [--comm mpi|nccl] [--json F]
//     For each gradient size d (one layer): fp32 allreduce of d floats; each compressed
//     exchange end to end (EF compress + exchange + apply: "compressed" = allgather,
//     "two-phase", "vote"; efsign/exchange.h); the allgather of the message alone.
//     Bandwidths as nccl-tests defines them:
//       allreduce: S = 4d bytes,        algbw = S / t, busbw = algbw * 2(W-1)/W
//       allgather: S = W * message,     algbw = S / t, busbw = algbw * (W-1)/W
//       two-phase: S = message,          algbw = S / t, busbw = algbw * 2(W-1)/W
//     (compressed and vote use the allgather's S). Every size is checked once, untimed:
//     allreduce inputs are small integers (exact sums); each compressed result must
//     equal the update computed locally from every rank's message rebuilt from its
//     seed (bit for bit on the host codec; for two-phase and vote written out there,
//     not by the library). Wrong elements are counted and printed, never hidden.
//
//   efsign-bench codec [--model resnet18|vgg19] [--world 2] [--iters 20] [--json F]
//     The CPU codec on a real model's layer table, against a memcpy of the same
//     gradient measured in the same run: compress (EF, one pass), decode-average-apply
//     of `world` messages, and both, for every codec path this CPU has.
//
//   efsign-bench loader [--dataset synthetic|cifar10|cifar100] [--data-dir D] [--model resnet18]
//     Images/s of the input pipeline alone (gather, crop+flip, normalise) against
//     images/s of forward+backward of the model on the same batches, one process.
//
//   mpirun -np W efsign-bench step [--model convnet] [--batch-size 64] [--steps 30] [--overlap] [--json F]
//     Per-step time split into forward+backward, compress, communicate, decode+update,
//     and images/s, for each optimizer (ef-signsgd once per exchange), same model and
//     batch, in one run. With --overlap the sign rows exchange buckets during backward
//     and the share of the exchange hidden behind backward is reported.
//
// Exit codes: 0 ok, 2 bad flags or input, 1 anything else (the job is aborted).
#include <mpi.h>

#include <cstdio>
#include <exception>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "bench_common.h"
#include "efsign/error.h"
#include "efsign/mpi_communicator.h"
#include "efsign/transport.h"

int main(int argc, char** argv) {
  using namespace efsign;
  MpiSession mpi(&argc, &argv);
  const bool root = mpi.world_rank() == 0;
  const std::string sub = argc > 1 ? argv[1] : "";
  if (sub != "comm" && sub != "step" && sub != "codec" && sub != "loader") {
    if (root)
      fmt::print(stderr, "usage: mpirun -np W efsign-bench comm|step|codec|loader [--help]\n"
                         "  loader: input pipeline vs forward+backward images/s\n"
                         "  comm: fp32 allreduce vs compressed exchange, size sweep\n"
                         "  codec: CPU codec vs memcpy on a real model's layer table\n"
                         "  step: per-step time breakdown for every optimizer\n");
    return sub == "--help" || sub == "-h" ? 0 : 2;
  }
  try {
    const std::shared_ptr<HostCommunicator> control = make_control_communicator();
    if (sub == "comm") return bench::run_comm(argc - 1, argv + 1, *control);
    if (sub == "codec") return bench::run_codec(argc - 1, argv + 1, *control);
    if (sub == "loader") return bench::run_loader(argc - 1, argv + 1, *control);
    return bench::run_step(argc - 1, argv + 1, control);
  } catch (const cxxopts::exceptions::exception& e) {
    if (root) fmt::print(stderr, "efsign-bench: error: {}\n", e.what());
    return 2;
  } catch (const UsageError& e) {
    if (root) fmt::print(stderr, "efsign-bench: error: {}\n", e.what());
    return 2;
  } catch (const InputError& e) {
    if (root) fmt::print(stderr, "efsign-bench: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "efsign-bench: fatal ({}): {}\n", where_am_i(), e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}
