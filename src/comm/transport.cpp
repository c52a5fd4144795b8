#include "efsign/transport.h"

#include <fmt/format.h>

#include "efsign/error.h"
#include "efsign/mpi_communicator.h"
#if defined(EFSIGN_HAVE_CUDA)
#include "efsign/nccl_communicator.h"
#endif

namespace efsign {

Transport parse_transport(const std::string& name) {
  if (name == "mpi") return Transport::kMpi;
  if (name == "nccl") return Transport::kNccl;
  throw UsageError(fmt::format("unknown transport '{}' (choose mpi or nccl)", name));
}

std::string transport_name(Transport transport) {
  switch (transport) {
    case Transport::kMpi: return "mpi";
    case Transport::kNccl: return "nccl";
  }
  throw Error("transport_name: unknown Transport");
}

std::shared_ptr<HostCommunicator> make_control_communicator(double timeout_s) {
  return std::make_shared<MpiCommunicator>(timeout_s, "control");
}

std::shared_ptr<Communicator> make_data_communicator(HostCommunicator& control, const TransportOptions& options) {
  switch (options.transport) {
    case Transport::kMpi:
      return std::make_shared<MpiCommunicator>(options.timeout_s, "data");
    case Transport::kNccl: {
#if defined(EFSIGN_HAVE_CUDA)
      const int device = options.device >= 0 ? options.device : mpi_local_rank();
      return std::make_shared<NcclCommunicator>(control, device, options.timeout_s);
#else
      (void)control;
      throw UsageError("--comm nccl: efsign was built without CUDA kernels and NCCL");
#endif
    }
  }
  throw Error("make_data_communicator: unknown Transport");
}

}  // namespace efsign
