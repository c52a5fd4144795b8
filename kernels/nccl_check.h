// kernels/nccl_check.h — error checking for NCCL calls. Plain C++; includes <nccl.h>.
//
//   EFSIGN_NCCL_CHECK(call)  evaluates `call` once; on anything but ncclSuccess throws
//                            efsign::CommError naming the call, file:line, rank, host.
#pragma once

#include <nccl.h>

#include "efsign/error.h"

#define EFSIGN_NCCL_CHECK(call)                                                                   \
  do {                                                                                           \
    const ncclResult_t efsign_nccl_rc_ = (call);                                                 \
    if (efsign_nccl_rc_ != ncclSuccess)                                                          \
      ::efsign::throw_nccl_error(static_cast<int>(efsign_nccl_rc_), ncclGetErrorString(efsign_nccl_rc_), \
                                 #call, __FILE__, __LINE__);                                     \
  } while (0)
