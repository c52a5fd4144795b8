// One main for every test binary: MPI up first, Catch2 second. Under mpirun every
// rank runs the selected tests; the exit code is non-zero on every rank if any failed
// on any rank.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <mpi.h>

#include "test_util.h"

namespace efsign::test {
namespace {
std::shared_ptr<MpiCommunicator> g_world;
}
MpiCommunicator& world() { return *g_world; }
std::shared_ptr<MpiCommunicator> world_ptr() { return g_world; }
}  // namespace efsign::test

int main(int argc, char** argv) {
  efsign::MpiSession mpi(&argc, &argv);
  efsign::test::g_world = std::make_shared<efsign::MpiCommunicator>();
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv)) return rc;
  const int failed = session.run();
  efsign::test::g_world.reset();
  int any = failed ? 1 : 0, worst = 0;
  MPI_Allreduce(&any, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (worst && !failed && mpi.world_rank() == 0) std::fprintf(stderr, "another rank had failing tests\n");
  return worst ? 1 : 0;
}
