// efsign/ddp.h — the data-parallel glue a training loop needs besides the optimizer,
// as PyTorch DDP provides it: every replica starts from rank 0's weights, the
// BatchNorm statistics (buffers, rank-local during training, as DDP without SyncBN)
// are averaged over the ranks where they must agree, and a checksum proves that the
// replicas hold the same bytes. All take the model's tensors on any device; the
// collectives run over a host communicator (the control plane, efsign/transport.h).
#pragma once

#include <cstdint>
#include <string>

#include <torch/nn/module.h>

#include "efsign/communicator.h"

namespace efsign {

// Collective: every parameter and buffer becomes rank 0's.
void broadcast_parameters(torch::nn::Module& model, HostCommunicator& comm);

// Collective: every floating-point buffer becomes the mean over the ranks (summed in
// double, so every rank computes the same bytes).
void average_buffers(torch::nn::Module& model, HostCommunicator& comm);

// FNV-1a over the bytes of every parameter (and buffer, when asked), in registration order.
uint64_t replica_checksum(torch::nn::Module& model, bool with_buffers);

// Collective: returns the checksum, the same on every rank; throws AgreedError on every
// rank (the same message) unless all ranks hold the same bytes. `when` ends the
// message, e.g. "after step 40".
uint64_t check_replicas(torch::nn::Module& model, HostCommunicator& comm, bool with_buffers, const std::string& when);

}  // namespace efsign
