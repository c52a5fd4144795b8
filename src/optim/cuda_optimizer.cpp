// GPU versions of the optimizers: the same update rules as the CPU classes
// (optimizer.h), executed by the fused kernels of kernels/sign_kernels.h over ALL
// layers per launch, with ONE collective per step on a device communicator (NCCL).
// Built only with CUDA + NCCL; runs only with a LibTorch that has CUDA.
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <cmath>

#include "cuda_check.h"
#include "efsign/error.h"
#include "optim_internal.h"
#include "sign_kernels.h"

namespace efsign::detail {
namespace {

// Device copies of the layer table and the chunk plan, plus timing events.
class CudaEngine {
 public:
  CudaEngine(const LayerTable& table, const at::Tensor& like)
      : plan_(kernels::ChunkPlan::build(table.sizes())), dev_(like.device()) {
    const auto u8 = at::TensorOptions().dtype(at::kByte).device(dev_);
    chunks_ = at::empty({static_cast<int64_t>(plan_.chunks.size() * sizeof(kernels::Chunk))}, u8);
    first_ = at::empty({static_cast<int64_t>(plan_.layer_first_chunk.size() * sizeof(int32_t))}, u8);
    layers_ = at::empty({static_cast<int64_t>(table.num_layers() * sizeof(kernels::DeviceLayer))}, u8);
    EFSIGN_CUDA_CHECK(cudaMemcpy(chunks_.data_ptr(), plan_.chunks.data(), chunks_.numel(), cudaMemcpyHostToDevice));
    EFSIGN_CUDA_CHECK(cudaMemcpy(first_.data_ptr(), plan_.layer_first_chunk.data(), first_.numel(),
                                 cudaMemcpyHostToDevice));
    for (auto& e : events_) EFSIGN_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~CudaEngine() {
    for (auto& e : events_)
      if (e) cudaEventDestroy(e);
  }
  CudaEngine(const CudaEngine&) = delete;
  CudaEngine& operator=(const CudaEngine&) = delete;

  // Uploads this step's pointers (grads may be reallocated between steps). momentum
  // and state may be empty (the optimizer has none).
  void upload(const LayerTable& table, const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
              const std::vector<at::Tensor>& momentum, const std::vector<at::Tensor>& state) {
    host_layers_.assign(table.num_layers(), kernels::DeviceLayer{});
    for (int64_t l = 0; l < table.num_layers(); ++l) {
      auto& d = host_layers_[l];
      d.grad = grads[l].data_ptr<float>();
      d.param = params[l].data_ptr<float>();
      d.momentum = momentum.empty() ? nullptr : momentum[l].data_ptr<float>();
      d.state = state.empty() ? nullptr : state[l].data_ptr<float>();
      d.n = table.size(l);
      d.word_offset = table.word_offset(l);
      d.elem_offset = table.elem_offset(l);
    }
    EFSIGN_CUDA_CHECK(cudaMemcpyAsync(layers_.data_ptr(), host_layers_.data(), layers_.numel(),
                                      cudaMemcpyHostToDevice, nullptr));
  }
  const kernels::DeviceLayer* layers() const { return static_cast<const kernels::DeviceLayer*>(layers_.data_ptr()); }
  const kernels::Chunk* chunks() const { return static_cast<const kernels::Chunk*>(chunks_.data_ptr()); }
  const int32_t* first_chunk() const { return static_cast<const int32_t*>(first_.data_ptr()); }
  int num_chunks() const { return static_cast<int>(plan_.chunks.size()); }
  void mark(int i) { EFSIGN_CUDA_CHECK(cudaEventRecord(events_[i], nullptr)); }
  // Fills the phase times once the step's last event has completed.
  void times(StepStats& st) {
    EFSIGN_CUDA_CHECK(cudaEventSynchronize(events_[3]));
    float a = 0, b = 0, c = 0;
    EFSIGN_CUDA_CHECK(cudaEventElapsedTime(&a, events_[0], events_[1]));
    EFSIGN_CUDA_CHECK(cudaEventElapsedTime(&b, events_[1], events_[2]));
    EFSIGN_CUDA_CHECK(cudaEventElapsedTime(&c, events_[2], events_[3]));
    st.compress_ms = a;
    st.comm_ms = b;
    st.update_ms = c;
  }

 private:
  kernels::ChunkPlan plan_;
  at::Device dev_;
  at::Tensor chunks_, first_, layers_;
  std::vector<kernels::DeviceLayer> host_layers_;
  cudaEvent_t events_[4] = {nullptr, nullptr, nullptr, nullptr};
};

class CudaSignOptimizer final : public DistributedOptimizer {
 public:
  CudaSignOptimizer(std::vector<at::Tensor> params, Communicator& data, HostCommunicator& control,
                    const OptimizerConfig& config)
      : DistributedOptimizer(std::move(params), data, control, config), engine_(table_, params_[0]) {
    const auto dev = params_[0].device();
    const auto i32 = at::TensorOptions().dtype(at::kInt).device(dev);
    send_ = at::zeros({table_.message_words()}, i32);
    recv_ = at::zeros({table_.message_words() * data_.size()}, i32);
    prev_scale_ = at::zeros({table_.num_layers()}, at::TensorOptions().dtype(at::kFloat).device(dev));
    partials_ = at::zeros({std::max(1, engine_.num_chunks())}, at::TensorOptions().dtype(at::kDouble).device(dev));
    for (auto& p : params_) {
      if (config_.kind == OptimizerKind::kEfSignSgd) state_.push_back(at::zeros_like(p));
      if (config_.kind == OptimizerKind::kSignum) momentum_.push_back(at::zeros_like(p));
    }
  }

  std::string exchange_name() const override { return fmt::format("allgather of packed signs ({}, fused CUDA kernels)", data_.backend()); }
  int64_t wire_bytes_per_step() const override { return table_.message_bytes(); }
  int64_t network_bytes_per_step() const override {
    return ring_allgather_wire_bytes(table_.message_bytes(), data_.size());
  }

  void step() override {
    grads_.clear();
    for (int64_t l = 0; l < table_.num_layers(); ++l) grads_.push_back(grad_of(l));
    engine_.upload(table_, params_, grads_, momentum_, state_);
    kernels::CompressConfig cc;
    cc.lr = static_cast<float>(config_.lr);
    cc.weight_decay = static_cast<float>(config_.weight_decay);
    cc.momentum = static_cast<float>(config_.momentum);
    cc.fixed_scale = config_.kind == OptimizerKind::kSignum;
    cc.fixed_scale_value = cc.lr;
    engine_.mark(0);
    kernels::compress_launch(engine_.layers(), static_cast<int>(table_.num_layers()), engine_.chunks(),
                             engine_.num_chunks(), engine_.first_chunk(), table_.total_words(), cc,
                             prev_scale_.data_ptr<float>(), partials_.data_ptr<double>(),
                             reinterpret_cast<uint32_t*>(send_.data_ptr<int32_t>()), nullptr);
    engine_.mark(1);
    const int64_t bytes0 = data_.bytes_sent(), wire0 = data_.wire_bytes(), calls0 = data_.calls();
    data_.allgather(Span<const std::byte>(static_cast<const std::byte*>(send_.data_ptr()), send_.numel() * 4),
                    Span<std::byte>(static_cast<std::byte*>(recv_.data_ptr()), recv_.numel() * 4));
    stats_.bytes_sent = data_.bytes_sent() - bytes0;
    stats_.wire_bytes = data_.wire_bytes() - wire0;
    stats_.calls = data_.calls() - calls0;
    engine_.mark(2);
    {  // Note [non-finite]: every rank's scales, W rows of L, to the host.
      const int64_t L = table_.num_layers();
      std::vector<float> all_scales(data_.size() * L);
      EFSIGN_CUDA_CHECK(cudaMemcpy2D(all_scales.data(), L * sizeof(float),
                                     static_cast<const int32_t*>(recv_.data_ptr()) + table_.total_words(),
                                     table_.message_words() * sizeof(int32_t), L * sizeof(float), data_.size(),
                                     cudaMemcpyDeviceToHost));
      if (nonfinite_verdict(all_scales)) {
        const std::vector<float> own(all_scales.begin() + data_.rank() * L, all_scales.begin() + (data_.rank() + 1) * L);
        for (int64_t l = 0; l < L; ++l) {
          if (std::isfinite(own[l])) continue;
          if (!state_.empty()) state_[l].zero_();
          if (!momentum_.empty()) momentum_[l].zero_();
        }
        prev_scale_.zero_();  // healthy layers keep all of p as their error
        engine_.mark(3);
        engine_.times(stats_);
        return;
      }
    }
    kernels::decode_apply_launch(engine_.layers(), static_cast<int>(table_.num_layers()), engine_.chunks(),
                                 engine_.num_chunks(), reinterpret_cast<const uint32_t*>(recv_.data_ptr<int32_t>()),
                                 data_.size(), table_.message_words(), table_.total_words(), nullptr);
    engine_.mark(3);
    engine_.times(stats_);
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    add_named(out, "ef_state", state_);
    add_named(out, "momentum", momentum_);
    if (!state_.empty()) out.emplace_back("ef_scale", prev_scale_);
    return out;
  }
  void reset_state() override {
    zero_all(state_);
    zero_all(momentum_);
    prev_scale_.zero_();
  }
  std::vector<at::Tensor> error_buffers() const override {
    std::vector<at::Tensor> out;
    const at::Tensor s = prev_scale_.to(at::kCPU);
    for (std::size_t l = 0; l < state_.size(); ++l) {
      const float sl = s[l].item<float>();
      out.push_back(state_[l] - at::where(state_[l] >= 0, at::full_like(state_[l], sl), at::full_like(state_[l], -sl)));
    }
    return out;
  }

 private:
  CudaEngine engine_;
  at::Tensor send_, recv_, prev_scale_, partials_;
  std::vector<at::Tensor> state_, momentum_, grads_;
};

class CudaSgdmOptimizer final : public DistributedOptimizer {
 public:
  CudaSgdmOptimizer(std::vector<at::Tensor> params, Communicator& data, HostCommunicator& control,
                    const OptimizerConfig& config)
      : DistributedOptimizer(std::move(params), data, control, config), engine_(table_, params_[0]) {
    flat_ = at::zeros({table_.total_elements()}, params_[0].options());
    for (auto& p : params_) momentum_.push_back(at::zeros_like(p));
  }
  std::string exchange_name() const override { return fmt::format("fp32 allreduce ({})", data_.backend()); }
  int64_t wire_bytes_per_step() const override { return table_.fp32_bytes(); }
  int64_t network_bytes_per_step() const override {
    return ring_allreduce_wire_bytes(table_.fp32_bytes(), data_.size());
  }

  void step() override {
    grads_.clear();
    for (int64_t l = 0; l < table_.num_layers(); ++l) grads_.push_back(grad_of(l));
    engine_.upload(table_, params_, grads_, momentum_, {});
    const int L = static_cast<int>(table_.num_layers());
    engine_.mark(0);
    kernels::gather_grads_launch(engine_.layers(), L, engine_.chunks(), engine_.num_chunks(),
                                 flat_.data_ptr<float>(), nullptr);
    engine_.mark(1);
    const int64_t bytes0 = data_.bytes_sent(), wire0 = data_.wire_bytes(), calls0 = data_.calls();
    data_.allreduce_sum(Span<float>(flat_.data_ptr<float>(), flat_.numel()));
    stats_.bytes_sent = data_.bytes_sent() - bytes0;
    stats_.wire_bytes = data_.wire_bytes() - wire0;
    stats_.calls = data_.calls() - calls0;
    engine_.mark(2);
    if (nonfinite_verdict_dense(at::isfinite(flat_).all().item<bool>())) {
      engine_.mark(3);
      engine_.times(stats_);
      return;
    }
    kernels::sgdm_update_launch(engine_.layers(), L, engine_.chunks(), engine_.num_chunks(), flat_.data_ptr<float>(),
                                data_.size(), static_cast<float>(config_.lr), static_cast<float>(config_.weight_decay),
                                static_cast<float>(config_.momentum), nullptr);
    engine_.mark(3);
    engine_.times(stats_);
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    add_named(out, "momentum", momentum_);
    return out;
  }
  void reset_state() override {
    zero_all(momentum_);
  }

 private:
  CudaEngine engine_;
  at::Tensor flat_;
  std::vector<at::Tensor> momentum_, grads_;
};

}  // namespace

std::unique_ptr<DistributedOptimizer> make_cuda(std::vector<at::Tensor> params, Communicator& data,
                                                HostCommunicator& control, const OptimizerConfig& config) {
  if (data.memory() != MemoryKind::kDevice)
    throw UsageError("parameters on a GPU need a device communicator (--backend nccl)");
  if (config.exchange != ExchangeKind::kAllgather || config.overlap)
    throw UsageError(fmt::format("--exchange {}{} is implemented for the CPU (--backend mpi) path only; the CUDA path "
                                 "exchanges by allgather, without overlap",
                                 exchange_kind_name(config.exchange), config.overlap ? " --overlap" : ""));
  if (config.kind == OptimizerKind::kSgdm)
    return std::make_unique<CudaSgdmOptimizer>(std::move(params), data, control, config);
  return std::make_unique<CudaSignOptimizer>(std::move(params), data, control, config);
}

}  // namespace efsign::detail
