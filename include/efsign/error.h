// efsign/error.h — the one error-checking header.
//
// Library code throws a typed exception; only main() functions decide how to exit:
//   UsageError  -> a bad flag or value the user gave          (exit code 2)
//   InputError  -> a file that is missing, truncated or wrong  (exit code 2)
//   CommError   -> a collective failed                          (exit code 1, job aborted)
//   AgreedError -> all ranks found that they disagree          (exit code 1, clean exit)
//   Error       -> anything else (a bug or an environment problem)
// Every message from a CHECK macro names the failing call, file:line, the rank and host.
#pragma once

#include <stdexcept>
#include <string>

namespace efsign {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
class UsageError : public Error {
 public:
  using Error::Error;
};
class InputError : public Error {
 public:
  using Error::Error;
};
class CommError : public Error {
 public:
  using Error::Error;
};
// A failure every rank detects together (ranks disagree on a hash or a checksum), so
// every rank can exit cleanly with the same message instead of aborting the job.
class AgreedError : public CommError {
 public:
  using CommError::CommError;
};

// "rank R on HOST" for messages; works before and after MPI_Init (falls back to the
// launcher's environment, then to "rank ?").
std::string where_am_i();

[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);
[[noreturn]] void throw_cuda_error(int code, const char* msg, const char* call, const char* file,
                                   int line);
[[noreturn]] void throw_nccl_error(int code, const char* msg, const char* call, const char* file,
                                   int line);

}  // namespace efsign

#define EFSIGN_MPI_CHECK(call)                                             \
  do {                                                                     \
    int efsign_mpi_rc_ = (call);                                           \
    if (efsign_mpi_rc_ != 0 /* MPI_SUCCESS */)                             \
      ::efsign::throw_mpi_error(efsign_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

// EFSIGN_CUDA_CHECK and EFSIGN_NCCL_CHECK live in kernels/cuda_check.h, which needs the
// CUDA headers; this header stays free of them.
