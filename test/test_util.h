// Shared by the tests: the world communicator set up by catch_main.cpp.
#pragma once

#include <memory>

#include "efsign/mpi_communicator.h"

namespace efsign::test {
MpiCommunicator& world();
std::shared_ptr<MpiCommunicator> world_ptr();  // the same, for what shares its ownership
}
