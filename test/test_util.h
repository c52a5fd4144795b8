// Shared by the tests: the world communicator set up by catch_main.cpp.
#pragma once

#include "efsign/mpi_communicator.h"

namespace efsign::test {
MpiCommunicator& world();
}
