#include "efsign/ddp.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include "efsign/checksum.h"

namespace efsign {

void broadcast_parameters(torch::nn::Module& model, HostCommunicator& comm) {
  torch::NoGradGuard no_grad;
  auto bcast = [&](at::Tensor t) {
    at::Tensor host = t.detach().to(at::kCPU).contiguous();
    comm.broadcast(Span<std::byte>(static_cast<std::byte*>(host.data_ptr()), host.numel() * host.element_size()), 0);
    if (host.data_ptr() != t.data_ptr()) t.copy_(host);
  };
  for (auto& p : model.parameters()) bcast(p);
  for (auto& b : model.buffers()) bcast(b);
}

void average_buffers(torch::nn::Module& model, HostCommunicator& comm) {
  if (comm.size() == 1) return;
  torch::NoGradGuard no_grad;
  for (auto& b : model.buffers()) {
    if (!b.is_floating_point()) continue;
    at::Tensor host = b.to(at::kCPU, at::kDouble).contiguous();
    comm.allreduce_sum(Span<double>(host.data_ptr<double>(), host.numel()));
    b.copy_(host.div_(comm.size()).to(b.options()));
  }
}

uint64_t replica_checksum(torch::nn::Module& model, bool with_buffers) {
  uint64_t h = kFnvOffset;
  auto mix = [&](const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    h = fnv1a(Span<const std::byte>(static_cast<const std::byte*>(c.data_ptr()), c.numel() * c.element_size()), h);
  };
  for (const auto& p : model.parameters()) mix(p);
  if (with_buffers)
    for (const auto& b : model.buffers()) mix(b);
  return h;
}

uint64_t check_replicas(torch::nn::Module& model, HostCommunicator& comm, bool with_buffers,
                        const std::string& when) {
  const uint64_t sum = replica_checksum(model, with_buffers);
  agree_or_throw(comm, sum, fmt::format("the parameter checksum {} (replicas diverged)", when));
  return sum;
}

}  // namespace efsign
