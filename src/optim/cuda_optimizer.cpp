// GPU versions of the optimizers: the same update rules as the CPU classes
// (optimizer.h), executed by the fused kernels of kernels/sign_kernels.h over ALL
// layers per launch, with ONE collective per step on a device communicator (NCCL).
// Built only with CUDA + NCCL; runs only with a LibTorch that has CUDA.
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <mutex>

#include "cuda_check.h"
#include "efsign/error.h"
#include "efsign/exchange.h"
#include "efsign/nccl_communicator.h"
#include "optim_internal.h"
#include "overlap.h"
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

// A chunk plan over arbitrary "layers" (here: two-phase segments) whose device
// pointers do not change between steps, uploaded once.
struct DevicePlan {
  kernels::ChunkPlan plan;
  at::Tensor layers, chunks, first;
  int num_layers = 0;

  DevicePlan() = default;
  DevicePlan(const std::vector<kernels::DeviceLayer>& host, at::Device dev) {
    std::vector<int64_t> sizes;
    for (const auto& d : host) sizes.push_back(d.n);
    plan = kernels::ChunkPlan::build(sizes);
    num_layers = static_cast<int>(host.size());
    layers = upload(host.data(), host.size() * sizeof(kernels::DeviceLayer), dev);
    chunks = upload(plan.chunks.data(), plan.chunks.size() * sizeof(kernels::Chunk), dev);
    first = upload(plan.layer_first_chunk.data(), plan.layer_first_chunk.size() * sizeof(int32_t), dev);
  }
  static at::Tensor upload(const void* src, std::size_t bytes, at::Device dev) {
    at::Tensor t = at::empty({static_cast<int64_t>(std::max<std::size_t>(bytes, 1))},
                             at::TensorOptions().dtype(at::kByte).device(dev));
    if (bytes) EFSIGN_CUDA_CHECK(cudaMemcpy(t.data_ptr(), src, bytes, cudaMemcpyHostToDevice));
    return t;
  }
  const kernels::DeviceLayer* d_layers() const { return static_cast<const kernels::DeviceLayer*>(layers.data_ptr()); }
  const kernels::Chunk* d_chunks() const { return static_cast<const kernels::Chunk*>(chunks.data_ptr()); }
  const int32_t* d_first() const { return static_cast<const int32_t*>(first.data_ptr()); }
  int num_chunks() const { return static_cast<int>(plan.chunks.size()); }
};

inline uint32_t* u32(const at::Tensor& t) { return reinterpret_cast<uint32_t*>(t.data_ptr<int32_t>()); }
inline Span<const std::byte> bytes_of(const at::Tensor& t) {
  return Span<const std::byte>(static_cast<const std::byte*>(t.data_ptr()), static_cast<std::size_t>(t.nbytes()));
}
inline Span<std::byte> writable_bytes_of(at::Tensor& t) {
  return Span<std::byte>(static_cast<std::byte*>(t.data_ptr()), static_cast<std::size_t>(t.nbytes()));
}

class CudaSignOptimizer final : public DistributedOptimizer {
 public:
  CudaSignOptimizer(std::vector<at::Tensor> params, Communicator& data, HostCommunicator& control,
                    const OptimizerConfig& config)
      : DistributedOptimizer(std::move(params), data, control, config), engine_(table_, params_[0]) {
    const auto dev = params_[0].device();
    const auto i32 = at::TensorOptions().dtype(at::kInt).device(dev);
    send_ = at::zeros({table_.message_words()}, i32);
    // W messages: only the one-message allgather/vote exchange needs them (two-phase
    // exists for large W, where this would be W times the model's signs).
    if (config_.exchange != ExchangeKind::kTwoPhase && !config_.overlap)
      recv_ = at::zeros({table_.message_words() * data_.size()}, i32);
    prev_scale_ = at::zeros({table_.num_layers()}, at::TensorOptions().dtype(at::kFloat).device(dev));
    partials_ = at::zeros({std::max(1, engine_.num_chunks())}, at::TensorOptions().dtype(at::kDouble).device(dev));
    for (auto& p : params_) {
      if (config_.kind == OptimizerKind::kEfSignSgd) state_.push_back(at::zeros_like(p));
      if (config_.kind == OptimizerKind::kSignum) momentum_.push_back(at::zeros_like(p));
    }
    if (config_.exchange == ExchangeKind::kTwoPhase) setup_two_phase();
    if (config_.overlap) setup_overlap();
  }

  ~CudaSignOptimizer() override {
    hooks_.reset();  // no more launches from backward
    // Buckets launched by a backward whose step() never came are still queued on the
    // NCCL stream: let them finish before their buffers are freed.
    if (nccl_) cudaStreamSynchronize(static_cast<cudaStream_t>(nccl_->stream()));
    for (auto& bd : bdev_) {
      if (bd.ready) cudaEventDestroy(bd.ready);
      if (bd.host) cudaFreeHost(bd.host);
    }
  }

  std::string exchange_name() const override {
    const char* what = config_.exchange == ExchangeKind::kTwoPhase ? "two-phase compressed allreduce"
                       : config_.exchange == ExchangeKind::kVote   ? "majority vote over an allgather of packed signs"
                                                                   : "allgather of packed signs";
    return fmt::format("{} ({}, fused CUDA kernels)", what, data_.backend());
  }
  int64_t wire_bytes_per_step() const override {
    if (config_.exchange == ExchangeKind::kTwoPhase) return to_servers_.numel() * 4 + served_.numel() * 4;
    return table_.message_bytes();
  }
  int64_t network_bytes_per_step() const override {
    if (config_.exchange == ExchangeKind::kTwoPhase) return tp_.wire_bytes();
    return ring_allgather_wire_bytes(table_.message_bytes(), data_.size());
  }

  void step() override {
    if (config_.overlap) {
      step_overlapped();
      return;
    }
    grads_.clear();
    for (int64_t l = 0; l < table_.num_layers(); ++l) grads_.push_back(grad_of(l));
    engine_.upload(table_, params_, grads_, momentum_, state_);
    const kernels::CompressConfig cc = compress_config();
    engine_.mark(0);
    kernels::compress_launch(engine_.layers(), static_cast<int>(table_.num_layers()), engine_.chunks(),
                             engine_.num_chunks(), engine_.first_chunk(), table_.total_words(), cc,
                             prev_scale_.data_ptr<float>(), partials_.data_ptr<double>(),
                             reinterpret_cast<uint32_t*>(send_.data_ptr<int32_t>()), nullptr);
    engine_.mark(1);
    const int64_t bytes0 = data_.bytes_sent(), wire0 = data_.wire_bytes(), calls0 = data_.calls();
    if (config_.exchange == ExchangeKind::kTwoPhase) {
      step_two_phase(bytes0, wire0, calls0);
      return;
    }
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
        skip_step(std::vector<float>(all_scales.begin() + data_.rank() * L, all_scales.begin() + (data_.rank() + 1) * L));
        engine_.mark(3);
        engine_.times(stats_);
        return;
      }
    }
    if (config_.exchange == ExchangeKind::kVote)
      kernels::vote_apply_launch(engine_.layers(), static_cast<int>(table_.num_layers()), engine_.chunks(),
                                 engine_.num_chunks(), u32(recv_), data_.size(), table_.message_words(),
                                 table_.total_words(), nullptr);
    else
      kernels::decode_apply_launch(engine_.layers(), static_cast<int>(table_.num_layers()), engine_.chunks(),
                                   engine_.num_chunks(), u32(recv_), data_.size(), table_.message_words(),
                                   table_.total_words(), nullptr);
    engine_.mark(3);
    engine_.times(stats_);
  }

  // Note [non-finite]: nothing is applied; healthy layers keep all of p as their
  // error (scale 0), layers poisoned on this rank (own scale not finite) lose their
  // error and momentum.
  void skip_step(const std::vector<float>& own) {
    for (std::size_t l = 0; l < own.size(); ++l) {
      if (std::isfinite(own[l])) continue;
      if (!state_.empty()) state_[l].zero_();
      if (!momentum_.empty()) momentum_[l].zero_();
    }
    prev_scale_.zero_();
  }

  kernels::CompressConfig compress_config() const {
    kernels::CompressConfig cc;
    cc.lr = static_cast<float>(config_.lr);
    cc.weight_decay = static_cast<float>(config_.weight_decay);
    cc.momentum = static_cast<float>(config_.momentum);
    cc.fixed_scale = config_.kind == OptimizerKind::kSignum;
    cc.fixed_scale_value = cc.lr;
    return cc;
  }

  // --overlap on the device. Buckets as on the CPU (make_buckets); each has its own
  // message (its layers' words, then their scales), chunk plan and device layer array.
  // When backward has finished a bucket's gradients (a post hook on AccumulateGrad,
  // on the autograd thread), an event on the compute stream orders the bucket's
  // compress kernel and its allgather on the communicator's stream; step() waits for
  // the stream and decodes. Per-layer chunks and partial sums are the same as in one
  // message, so the bits are the same as without --overlap.
  struct BucketDev {
    int64_t first = 0, last = 0, word_begin = 0, words = 0, msg_words = 0;
    kernels::ChunkPlan plan;
    // Pinned, so the per-step pointer upload from the hook never waits for the stream
    // (a pageable copy may; a dead peer would then hang backward past the watchdog).
    kernels::DeviceLayer* host = nullptr;
    int64_t num_layers = 0;
    at::Tensor layers, chunks, first_chunk, send, recv, partials;
    cudaEvent_t ready = nullptr;
  };

  void setup_overlap() {
    nccl_ = dynamic_cast<NcclCommunicator*>(&data_);
    if (!nccl_) throw Error("--overlap on the GPU needs the NCCL communicator");
    const auto dev = params_[0].device();
    const auto i32 = at::TensorOptions().dtype(at::kInt).device(dev);
    for (const Bucket& k : make_buckets(table_, config_.bucket_bytes)) {
      BucketDev bd;
      bd.first = k.first;
      bd.last = k.last;
      bd.word_begin = table_.word_offset(k.first);
      bd.words = table_.word_offset(k.last - 1) + table_.words(k.last - 1) - bd.word_begin;
      bd.msg_words = bd.words + (k.last - k.first);
      std::vector<int64_t> sizes(table_.sizes().begin() + k.first, table_.sizes().begin() + k.last);
      bd.plan = kernels::ChunkPlan::build(sizes);
      bd.num_layers = k.last - k.first;
      EFSIGN_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&bd.host),
                                      bd.num_layers * sizeof(kernels::DeviceLayer), cudaHostAllocDefault));
      for (int64_t l = k.first; l < k.last; ++l) {
        kernels::DeviceLayer d;
        d.param = params_[l].data_ptr<float>();
        d.momentum = momentum_.empty() ? nullptr : momentum_[l].data_ptr<float>();
        d.state = state_.empty() ? nullptr : state_[l].data_ptr<float>();
        d.n = table_.size(l);
        d.word_offset = table_.word_offset(l) - bd.word_begin;
        bd.host[l - k.first] = d;
      }
      bd.layers = DevicePlan::upload(bd.host, bd.num_layers * sizeof(kernels::DeviceLayer), dev);
      bd.chunks = DevicePlan::upload(bd.plan.chunks.data(), bd.plan.chunks.size() * sizeof(kernels::Chunk), dev);
      bd.first_chunk =
          DevicePlan::upload(bd.plan.layer_first_chunk.data(), bd.plan.layer_first_chunk.size() * sizeof(int32_t), dev);
      bd.send = at::zeros({bd.msg_words}, i32);
      bd.recv = at::zeros({bd.msg_words * data_.size()}, i32);
      bd.partials = at::zeros({std::max<int64_t>(1, static_cast<int64_t>(bd.plan.chunks.size()))},
                              at::TensorOptions().dtype(at::kDouble).device(dev));
      EFSIGN_CUDA_CHECK(cudaEventCreateWithFlags(&bd.ready, cudaEventDisableTiming));
      bdev_.push_back(std::move(bd));
    }
    pending_.assign(bdev_.size(), 0);
    seen_.assign(table_.num_layers(), 0);
    keep_.assign(table_.num_layers(), at::Tensor());
    reset_pending();
    bytes_mark_ = data_.bytes_sent();
    wire_mark_ = data_.wire_bytes();
    calls_mark_ = data_.calls();
    hooks_ = std::make_unique<GradReadyHooks>(params_, [this](int64_t l) { on_grad_ready(l); });
  }

  void reset_pending() {
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t b = 0; b < bdev_.size(); ++b) pending_[b] = bdev_[b].last - bdev_[b].first;
    std::fill(seen_.begin(), seen_.end(), 0);
    next_ = 0;
    hook_error_.clear();
  }

  void on_grad_ready(int64_t l) {  // autograd thread
    std::lock_guard<std::mutex> lock(mu_);
    if (seen_[l]++) {
      hook_error_ = fmt::format("--overlap: parameter {} received its gradient twice before step()", l);
      return;
    }
    int b = 0;
    while (!(bdev_[b].first <= l && l < bdev_[b].last)) ++b;
    if (--pending_[b] > 0) return;
    while (next_ < static_cast<int>(bdev_.size()) && pending_[next_] == 0) {
      launch_bucket(next_);
      ++next_;
    }
  }

  void launch_bucket(int b) {  // mu_ held
    BucketDev& bd = bdev_[b];
    for (int64_t l = bd.first; l < bd.last; ++l) {
      keep_[l] = grad_of(l);  // alive until step() has waited for the stream
      bd.host[l - bd.first].grad = keep_[l].data_ptr<float>();
    }
    auto cs = static_cast<cudaStream_t>(nccl_->stream());
    EFSIGN_CUDA_CHECK(cudaEventRecord(bd.ready, nullptr));  // the gradients' kernels, on the compute stream
    EFSIGN_CUDA_CHECK(cudaStreamWaitEvent(cs, bd.ready, 0));
    EFSIGN_CUDA_CHECK(cudaMemcpyAsync(bd.layers.data_ptr(), bd.host, bd.num_layers * sizeof(kernels::DeviceLayer),
                                      cudaMemcpyHostToDevice, cs));
    const kernels::CompressConfig cc = compress_config();
    kernels::compress_launch(static_cast<const kernels::DeviceLayer*>(bd.layers.data_ptr()),
                             static_cast<int>(bd.last - bd.first), static_cast<const kernels::Chunk*>(bd.chunks.data_ptr()),
                             static_cast<int>(bd.plan.chunks.size()), static_cast<const int32_t*>(bd.first_chunk.data_ptr()),
                             bd.words, cc, prev_scale_.data_ptr<float>() + bd.first, bd.partials.data_ptr<double>(),
                             u32(bd.send), cs);
    nccl_->allgather(bytes_of(bd.send), writable_bytes_of(bd.recv));
  }

  void step_overlapped() {
    engine_.mark(0);
    engine_.mark(1);
    std::string err;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      {
        std::lock_guard<std::mutex> lock(mu_);
        err = hook_error_;
        stats_.buckets = static_cast<int64_t>(bdev_.size());
        stats_.buckets_started_in_backward = next_;
        for (; next_ < static_cast<int>(bdev_.size()); ++next_) launch_bucket(next_);
      }
      nccl_->synchronize("overlapped allgather");
    } catch (...) {  // leave the next step a clean slate (as the CPU path does)
      reset_pending();
      std::fill(keep_.begin(), keep_.end(), at::Tensor());
      throw;
    }
    stats_.wait_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    reset_pending();
    std::fill(keep_.begin(), keep_.end(), at::Tensor());
    if (!err.empty()) throw Error(err);
    // Counted since the last step's end: most launches happened during backward (the
    // NCCL communicator carries only this optimizer's data traffic).
    stats_.bytes_sent = data_.bytes_sent() - bytes_mark_;
    stats_.wire_bytes = data_.wire_bytes() - wire_mark_;
    stats_.calls = data_.calls() - calls_mark_;
    bytes_mark_ = data_.bytes_sent();
    wire_mark_ = data_.wire_bytes();
    calls_mark_ = data_.calls();
    engine_.mark(2);
    const int W = data_.size();
    const int64_t L = table_.num_layers();
    std::vector<float> all_scales(W * L);
    for (const BucketDev& bd : bdev_) {
      const int64_t Lb = bd.last - bd.first;
      EFSIGN_CUDA_CHECK(cudaMemcpy2D(all_scales.data() + bd.first, L * sizeof(float),
                                     static_cast<const int32_t*>(bd.recv.data_ptr()) + bd.words,
                                     bd.msg_words * sizeof(int32_t), Lb * sizeof(float), W, cudaMemcpyDeviceToHost));
    }
    if (nonfinite_verdict(all_scales)) {
      skip_step(std::vector<float>(all_scales.begin() + data_.rank() * L, all_scales.begin() + (data_.rank() + 1) * L));
      engine_.mark(3);
      engine_.times(stats_);
      return;
    }
    for (const BucketDev& bd : bdev_) {
      const auto* layers = static_cast<const kernels::DeviceLayer*>(bd.layers.data_ptr());
      const auto* chunks = static_cast<const kernels::Chunk*>(bd.chunks.data_ptr());
      const int Lb = static_cast<int>(bd.last - bd.first), nc = static_cast<int>(bd.plan.chunks.size());
      if (config_.exchange == ExchangeKind::kVote)
        kernels::vote_apply_launch(layers, Lb, chunks, nc, u32(bd.recv), W, bd.msg_words, bd.words, nullptr);
      else
        kernels::decode_apply_launch(layers, Lb, chunks, nc, u32(bd.recv), W, bd.msg_words, bd.words, nullptr);
    }
    engine_.mark(3);
    engine_.times(stats_);
  }

  // Note [two-phase] on the device, one bucket: gather the blocks out of the message,
  // alltoallv, server decode-add + re-compress over this rank's segments, allgatherv,
  // gather the blocks back into one message-shaped array (all words in flat order,
  // then one scale per segment), apply it as a one-rank decode over the segments, and
  // commit the server error.
  void setup_two_phase() {
    const int W = data_.size(), r = data_.rank();
    const int L = static_cast<int>(table_.num_layers());
    tp_ = TwoPhaseLayout::build(table_, {Bucket{0, L}}, W, r);
    const auto& tb = tp_.buckets[0];
    const auto dev = params_[0].device();
    const auto i32 = at::TensorOptions().dtype(at::kInt).device(dev);
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(dev);
    const auto& mine = tb.blocks[r];
    const int64_t T = table_.total_words(), S = static_cast<int64_t>(tp_.segments.size());
    // Where each word of the all-to-all buffer comes from in the message.
    std::vector<int64_t> to_servers_idx;
    for (int c = 0; c < W; ++c) {
      const auto& blk = tb.blocks[c];
      for (int64_t w = blk.word_begin; w < blk.word_end; ++w) to_servers_idx.push_back(w);
      for (int64_t id : blk.segments) to_servers_idx.push_back(T + tp_.segments[id].layer);
    }
    // Where each word of the message-shaped array comes from in the gathered blocks.
    std::vector<int64_t> pseudo_idx(T + S);
    for (int c = 0; c < W; ++c) {
      const auto& blk = tb.blocks[c];
      for (int64_t w = blk.word_begin; w < blk.word_end; ++w) pseudo_idx[w] = tb.gathered_at[c] + (w - blk.word_begin);
      for (int64_t id : blk.segments) pseudo_idx[T + id] = tb.gathered_at[c] + blk.words() + tp_.segments[id].slot;
    }
    to_servers_idx_ = DevicePlan::upload(to_servers_idx.data(), to_servers_idx.size() * 8, dev);
    pseudo_idx_ = DevicePlan::upload(pseudo_idx.data(), pseudo_idx.size() * 8, dev);
    to_servers_ = at::zeros({static_cast<int64_t>(to_servers_idx.size())}, i32);
    from_workers_ = at::zeros({W * mine.len()}, i32);
    served_ = at::zeros({mine.len()}, i32);
    gathered_ = at::zeros({tb.gathered_words}, i32);
    pseudo_ = at::zeros({T + S}, i32);
    server_p_ = at::zeros({tp_.server_elems}, f32);
    server_e_ = at::zeros({tp_.server_elems}, f32);
    server_scales_ = at::zeros({std::max<int64_t>(1, static_cast<int64_t>(mine.segments.size()))}, f32);
    // This rank's segments: p in place (decode-add, re-compress), and p -> e (commit).
    std::vector<kernels::DeviceLayer> own, commit;
    for (int64_t id : mine.segments) {
      const auto& sg = tp_.segments[id];
      kernels::DeviceLayer d;
      d.grad = server_p_.data_ptr<float>() + sg.server_offset;
      d.param = server_p_.data_ptr<float>() + sg.server_offset;
      d.n = sg.elems;
      d.word_offset = sg.word_begin - mine.word_begin;
      own.push_back(d);
      d.param = server_e_.data_ptr<float>() + sg.server_offset;
      commit.push_back(d);
    }
    own_ = DevicePlan(own, dev);
    commit_ = DevicePlan(commit, dev);
    server_partials_ = at::zeros({std::max(1, own_.num_chunks())}, at::TensorOptions().dtype(at::kDouble).device(dev));
    // Every segment of every layer: x -= s sign(p) from the message-shaped array.
    std::vector<kernels::DeviceLayer> all;
    for (const auto& sg : tp_.segments) {
      kernels::DeviceLayer d;
      d.param = params_[sg.layer].data_ptr<float>() + sg.elem_begin;
      d.n = sg.elems;
      d.word_offset = sg.word_begin;
      all.push_back(d);
    }
    apply_ = DevicePlan(all, dev);
  }

  void step_two_phase(int64_t bytes0, int64_t wire0, int64_t calls0) {
    const int W = data_.size();
    const auto& tb = tp_.buckets[0];
    const auto& mine = tb.blocks[data_.rank()];
    const int64_t T = table_.total_words(), S = static_cast<int64_t>(tp_.segments.size());
    kernels::gather_u32_launch(u32(send_), static_cast<const int64_t*>(to_servers_idx_.data_ptr()), u32(to_servers_),
                               to_servers_.numel(), nullptr);
    data_.alltoallv(bytes_of(to_servers_), Span<const int64_t>(tb.counts), writable_bytes_of(from_workers_));
    if (tp_.server_elems > 0) {
      EFSIGN_CUDA_CHECK(cudaMemcpyAsync(server_p_.data_ptr(), server_e_.data_ptr(), tp_.server_elems * sizeof(float),
                                        cudaMemcpyDeviceToDevice, nullptr));
    }
    kernels::decode_add_launch(own_.d_layers(), own_.num_layers, own_.d_chunks(), own_.num_chunks(),
                               u32(from_workers_), W, mine.len(), mine.words(), nullptr);
    kernels::CompressConfig unit;
    unit.lr = 1.0f;  // packs p and takes mean |p|
    kernels::compress_launch(own_.d_layers(), own_.num_layers, own_.d_chunks(), own_.num_chunks(), own_.d_first(),
                             mine.words(), unit, server_scales_.data_ptr<float>(), server_partials_.data_ptr<double>(),
                             u32(served_), nullptr);
    data_.allgatherv(bytes_of(served_), Span<const int64_t>(tb.counts), writable_bytes_of(gathered_));
    kernels::gather_u32_launch(u32(gathered_), static_cast<const int64_t*>(pseudo_idx_.data_ptr()), u32(pseudo_),
                               pseudo_.numel(), nullptr);
    stats_.bytes_sent = data_.bytes_sent() - bytes0;
    stats_.wire_bytes = data_.wire_bytes() - wire0;
    stats_.calls = data_.calls() - calls0;
    engine_.mark(2);
    // Note [non-finite]: every segment's server scale, then this rank's own scales.
    std::vector<float> seg_scales(S);
    if (S > 0)
      EFSIGN_CUDA_CHECK(cudaMemcpy(seg_scales.data(), static_cast<const int32_t*>(pseudo_.data_ptr()) + T,
                                   S * sizeof(float), cudaMemcpyDeviceToHost));
    std::string why;
    for (int64_t k = 0; k < S && why.empty(); ++k)
      if (!std::isfinite(seg_scales[k]))
        why = fmt::format("non-finite gradient (NaN or Inf) in layer {} (its average, formed on rank {}, is not finite)",
                          tp_.segments[k].layer, tp_.segments[k].chunk);
    if (nonfinite_verdict(why)) {
      const int64_t L = table_.num_layers();
      std::vector<float> own(L);
      EFSIGN_CUDA_CHECK(cudaMemcpy(own.data(), static_cast<const int32_t*>(send_.data_ptr()) + T, L * sizeof(float),
                                   cudaMemcpyDeviceToHost));
      skip_step(own);  // the server error is not committed either
      engine_.mark(3);
      engine_.times(stats_);
      return;
    }
    kernels::decode_apply_launch(apply_.d_layers(), apply_.num_layers, apply_.d_chunks(), apply_.num_chunks(),
                                 u32(pseudo_), 1, T + S, T, nullptr);
    kernels::error_from_state_launch(commit_.d_layers(), commit_.num_layers, commit_.d_chunks(), commit_.num_chunks(),
                                     server_scales_.data_ptr<float>(), nullptr);
    engine_.mark(3);
    engine_.times(stats_);
  }

  std::vector<std::pair<std::string, at::Tensor>> state_tensors() override {
    std::vector<std::pair<std::string, at::Tensor>> out;
    add_named(out, "ef_state", state_);
    add_named(out, "momentum", momentum_);
    if (!state_.empty()) out.emplace_back("ef_scale", prev_scale_);
    if (config_.exchange == ExchangeKind::kTwoPhase) out.emplace_back("server_error", server_e_);
    return out;
  }
  void reset_state() override {
    zero_all(state_);
    zero_all(momentum_);
    prev_scale_.zero_();
    if (server_e_.defined()) server_e_.zero_();
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
  // --exchange two-phase
  TwoPhaseLayout tp_;
  at::Tensor to_servers_idx_, pseudo_idx_, to_servers_, from_workers_, served_, gathered_, pseudo_;
  at::Tensor server_p_, server_e_, server_scales_, server_partials_;
  DevicePlan own_, commit_, apply_;
  // --overlap
  NcclCommunicator* nccl_ = nullptr;
  std::vector<BucketDev> bdev_;
  std::mutex mu_;
  std::vector<int64_t> pending_;
  std::vector<int> seen_;
  std::vector<at::Tensor> keep_;
  int next_ = 0;
  std::string hook_error_;
  int64_t bytes_mark_ = 0, wire_mark_ = 0, calls_mark_ = 0;
  std::unique_ptr<GradReadyHooks> hooks_;
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
  if (config.overlap && config.exchange == ExchangeKind::kTwoPhase)
    throw UsageError("--overlap with --exchange two-phase is implemented on the CPU path only (the CUDA two-phase "
                     "exchange is one bucket)");
  if (config.kind == OptimizerKind::kSgdm)
    return std::make_unique<CudaSgdmOptimizer>(std::move(params), data, control, config);
  return std::make_unique<CudaSignOptimizer>(std::move(params), data, control, config);
}

}  // namespace efsign::detail
