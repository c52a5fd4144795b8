// efsign-train: one process per rank, under mpirun.
// Exit codes: 0 ok, 2 bad flag/value/input (one line on rank 0), 1 anything else.
#include <mpi.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include <fmt/format.h>

#include "efsign/error.h"
#include "efsign/mpi_communicator.h"
#include "efsign/trainer.h"
#include "efsign/transport.h"

namespace {

// For the shell tests (test/cli_train.sh): EFSIGN_TEST_DIVERGE_RANK=r nudges rank r's
// first parameter after global step EFSIGN_TEST_DIVERGE_STEP (default: before the final
// replica check), so that a replica check must fail.
efsign::TrainHooks test_hooks(int rank) {
  efsign::TrainHooks hooks;
  const char* r = std::getenv("EFSIGN_TEST_DIVERGE_RANK");
  if (!r || std::atoi(r) != rank) return hooks;
  auto nudge = [](torch::nn::Module& model) {
    torch::NoGradGuard no_grad;
    model.parameters()[0].view(-1)[0].add_(1e-3);
  };
  if (const char* s = std::getenv("EFSIGN_TEST_DIVERGE_STEP")) {
    const int64_t at = std::atoll(s);
    hooks.after_step = [nudge, at](torch::nn::Module& model, int64_t step) {
      if (step == at) nudge(model);
    };
  } else {
    hooks.before_final_check = nudge;
  }
  return hooks;
}

}  // namespace

int main(int argc, char** argv) {
  efsign::MpiSession mpi(&argc, &argv, efsign::comm_timeout_arg(argc, argv));  // MPI_Init under --comm-timeout
  const bool root = mpi.world_rank() == 0;
  try {
    std::string help;
    const auto options = efsign::parse_train_options(argc, argv, &help);
    if (!options) {
      if (root) fmt::print("{}", help);
      return 0;
    }
    efsign::run_training(*options, efsign::make_control_communicator(options->comm_timeout_s),
                         test_hooks(mpi.world_rank()));
    return 0;
  } catch (const efsign::UsageError& e) {  // every rank sees the same flags, or agreed
    if (root) fmt::print(stderr, "efsign-train: error: {}\n", e.what());
    return 2;
  } catch (const efsign::InputError& e) {  // agreed across ranks in run_training
    if (root) fmt::print(stderr, "efsign-train: error: {}\n", e.what());
    return 2;
  } catch (const efsign::AgreedError& e) {
    if (root) fmt::print(stderr, "efsign-train: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // one rank alone: take the whole job down
    fmt::print(stderr, "efsign-train: fatal ({}): {}\n", efsign::where_am_i(), e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}
