#include "efsign/optimizer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <cmath>

#include "efsign/checksum.h"
#include "efsign/error.h"
#include "optim_internal.h"

namespace efsign {

OptimizerKind parse_optimizer(const std::string& name) {
  if (name == "sgdm") return OptimizerKind::kSgdm;
  if (name == "signsgd") return OptimizerKind::kSignSgd;
  if (name == "signum") return OptimizerKind::kSignum;
  if (name == "ef-signsgd") return OptimizerKind::kEfSignSgd;
  throw UsageError(fmt::format("unknown optimizer '{}' (choose one of: sgdm, signsgd, signum, ef-signsgd)", name));
}

std::string optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgdm: return "sgdm";
    case OptimizerKind::kSignSgd: return "signsgd";
    case OptimizerKind::kSignum: return "signum";
    case OptimizerKind::kEfSignSgd: return "ef-signsgd";
  }
  return "?";
}

std::vector<std::string> optimizer_names() { return {"sgdm", "signsgd", "signum", "ef-signsgd"}; }

static LayerTable table_of(const std::vector<at::Tensor>& params) {
  std::vector<int64_t> sizes;
  sizes.reserve(params.size());
  for (const auto& p : params) sizes.push_back(p.numel());
  return LayerTable(std::move(sizes));
}

DistributedOptimizer::DistributedOptimizer(std::vector<at::Tensor> params, Communicator& data,
                                           HostCommunicator& control, OptimizerConfig config)
    : params_(std::move(params)), data_(data), control_(control), config_(config), table_(table_of(params_)) {
  for (std::size_t l = 0; l < params_.size(); ++l) {
    const auto& p = params_[l];
    if (p.scalar_type() != at::kFloat) throw Error(fmt::format("parameter {} is not float32", l));
    if (!p.is_contiguous()) throw Error(fmt::format("parameter {} is not contiguous", l));
  }
  if (data_.size() != control_.size() || data_.rank() != control_.rank())
    throw Error("data and control communicators disagree on rank or world size");
  if (config_.lr < 0) throw UsageError(fmt::format("learning rate must be >= 0 (got {})", config_.lr));
  if (config_.momentum < 0 || config_.momentum >= 1)
    throw UsageError(fmt::format("momentum must be in [0, 1) (got {})", config_.momentum));
  if (config_.weight_decay < 0)
    throw UsageError(fmt::format("weight decay must be >= 0 (got {})", config_.weight_decay));
  if (config_.kind == OptimizerKind::kSgdm && (config_.exchange != ExchangeKind::kAllgather || config_.overlap))
    throw UsageError("sgdm always exchanges by fp32 allreduce: --exchange and --overlap are for the sign optimizers");
  if (config_.overlap && config_.bucket_bytes <= 0)
    throw UsageError(fmt::format("bucket size must be > 0 (got {} bytes)", config_.bucket_bytes));
  uint64_t h = fnv1a_u64(table_.hash(), fnv1a_string(optimizer_name(config_.kind)));
  agree_or_throw(control_, h, "the model's layer table and the optimizer");
  h = fnv1a_string(exchange_kind_name(config_.exchange));
  h = fnv1a_u64(h, config_.overlap ? static_cast<uint64_t>(config_.bucket_bytes) : 0);
  agree_or_throw(control_, h, "the exchange (--exchange, --overlap, --bucket-mb)");
}

at::Tensor DistributedOptimizer::grad_of(int64_t l) {
  auto& p = params_[l];
  at::Tensor g = p.grad();
  if (!g.defined()) return at::zeros_like(p);
  if (g.scalar_type() != at::kFloat || g.device() != p.device())
    throw Error(fmt::format("gradient of parameter {} is not float32 on the parameter's device", l));
  return g.is_contiguous() ? g : g.contiguous();
}

void DistributedOptimizer::add_named(std::vector<std::pair<std::string, at::Tensor>>& out, const char* prefix,
                                     const std::vector<at::Tensor>& tensors) {
  for (std::size_t l = 0; l < tensors.size(); ++l) out.emplace_back(fmt::format("{}.{}", prefix, l), tensors[l]);
}

void DistributedOptimizer::zero_all(std::vector<at::Tensor>& tensors) {
  for (auto& t : tensors) t.zero_();
}

bool DistributedOptimizer::nonfinite_verdict(const std::vector<float>& scales) {
  const int64_t L = table_.num_layers();
  for (int w = 0; w < data_.size(); ++w)
    for (int64_t l = 0; l < L; ++l)
      if (!std::isfinite(scales[w * L + l]))
        return nonfinite_verdict(fmt::format("non-finite gradient (NaN or Inf) on rank {} in layer {}", w, l));
  return nonfinite_verdict(std::string());
}

bool DistributedOptimizer::nonfinite_verdict(const std::string& reason) {
  stats_.skipped = !reason.empty();
  stats_.skip_reason = reason;
  if (stats_.skipped && config_.on_nonfinite == NonFinitePolicy::kAbort)
    throw AgreedError(reason + " (--on-nonfinite abort)");
  return stats_.skipped;
}

bool DistributedOptimizer::nonfinite_verdict_dense(bool finite) {
  stats_.skipped = !finite;
  stats_.skip_reason = finite ? "" : "non-finite averaged gradient (NaN or Inf on some rank)";
  if (!finite && config_.on_nonfinite == NonFinitePolicy::kAbort)
    throw AgreedError(stats_.skip_reason + " (--on-nonfinite abort)");
  return !finite;
}

std::unique_ptr<DistributedOptimizer> make_optimizer(std::vector<at::Tensor> params, Communicator& data,
                                                     HostCommunicator& control, const OptimizerConfig& config) {
  if (params.empty()) throw Error("make_optimizer: no parameters");
  if (params[0].device().is_cuda()) {
#if defined(EFSIGN_HAVE_CUDA)
    return detail::make_cuda(std::move(params), data, control, config);
#else
    throw UsageError("parameters are on a GPU but efsign was built without CUDA kernels and NCCL");
#endif
  }
  if (data.memory() != MemoryKind::kHost)
    throw UsageError("host parameters need a host communicator (--backend mpi)");
  if (config.kind == OptimizerKind::kSgdm) return detail::make_sgdm(std::move(params), data, control, config);
  return detail::make_sign(std::move(params), data, control, config);
}

}  // namespace efsign
