#include "efsign/error.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>

namespace efsign {

std::string where_am_i() {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return fmt::format("rank {} on {}", rank, host);
  }
  if (const char* r = std::getenv("OMPI_COMM_WORLD_RANK")) return fmt::format("rank {} on {}", r, host);
  return fmt::format("rank ? on {}", host);
}

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw CommError(fmt::format("MPI error {} ({}) in {} at {}:{} ({})", code, text, call, file, line, where_am_i()));
}

void throw_cuda_error(int code, const char* msg, const char* call, const char* file, int line) {
  throw Error(fmt::format("CUDA error {} ({}) in {} at {}:{} ({})", code, msg, call, file, line, where_am_i()));
}

void throw_nccl_error(int code, const char* msg, const char* call, const char* file, int line) {
  throw CommError(fmt::format("NCCL error {} ({}) in {} at {}:{} ({})", code, msg, call, file, line, where_am_i()));
}

}  // namespace efsign
