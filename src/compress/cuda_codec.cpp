// The CUDA codec: efsign/codec.h over the kernels of kernels/sign_kernels.h. It needs
// no LibTorch: raw device pointers and the CUDA runtime API. It is compiled twice:
// against the real runtime (in efsign_core when built with CUDA, make_cuda_codec) and against the host
// emulation of kernels/emu (efsign_cuda_codec_emu, make_emulated_cuda_codec), where the
// very same code — layer sets, pinned staging, events, every kernel — runs in CI on
// host memory. EFSIGN_CUDA_EMULATION selects the second; the two live in different
// namespaces, so one binary may link both.
#include <algorithm>
#include <memory>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cuda_check.h"
#include "efsign/codec.h"
#include "efsign/error.h"
#include "sign_kernels.h"

namespace efsign {
#if defined(EFSIGN_CUDA_EMULATION)
namespace cuda_emu_codec {
#else
namespace cuda_codec {
#endif
namespace {

namespace k = kernels;

// Makes `device` current for the calling thread (the --overlap communication thread
// calls the codec too) and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    EFSIGN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) EFSIGN_CUDA_CHECK(cudaSetDevice(device));
    restore_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool restore_ = false;
};

void free_device(void* p) { cudaFree(p); }
void free_pinned(void* p) { cudaFreeHost(p); }

CodecBuffer device_alloc(int64_t bytes) {
  void* p = nullptr;
  const std::size_t n = static_cast<std::size_t>(std::max<int64_t>(bytes, 4));
  EFSIGN_CUDA_CHECK(cudaMalloc(&p, n));
  CodecBuffer buf(p, bytes, free_device);
  EFSIGN_CUDA_CHECK(cudaMemset(p, 0, n));
  return buf;
}

CodecBuffer pinned_alloc(int64_t bytes) {
  void* p = nullptr;
  const std::size_t n = static_cast<std::size_t>(std::max<int64_t>(bytes, 4));
  EFSIGN_CUDA_CHECK(cudaHostAlloc(&p, n, cudaHostAllocDefault));
  CodecBuffer buf(p, bytes, free_pinned);
  std::memset(p, 0, n);
  return buf;
}

template <typename T>
CodecBuffer upload(const std::vector<T>& host) {
  CodecBuffer buf = device_alloc(static_cast<int64_t>(host.size() * sizeof(T)));
  if (!host.empty())
    EFSIGN_CUDA_CHECK(cudaMemcpy(buf.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return buf;
}

k::DeviceLayer device_layer(const CodecLayer& l) {
  k::DeviceLayer d;
  d.grad = l.grad;
  d.param = l.param;
  d.momentum = l.momentum;
  d.state = l.state;
  d.n = l.n;
  d.word_offset = l.word_offset;
  d.scale_index = l.scale_index;
  d.elem_offset = l.elem_offset;
  return d;
}

// A prepared set: the chunk plan and the layer array on the device, the compress
// workspace (one double per chunk, one arrival counter per layer), and a pinned host
// copy of the layer array from which changed grad pointers are uploaded, in stream
// order, by the next launch that uses the set.
class CudaLayerSet final : public LayerSet {
 public:
  explicit CudaLayerSet(const std::vector<CodecLayer>& layers) : layers_(layers) {
    std::vector<int64_t> sizes;
    for (const CodecLayer& l : layers) sizes.push_back(l.n);
    plan_ = k::ChunkPlan::build(sizes);
    host_ = pinned_alloc(static_cast<int64_t>(layers.size() * sizeof(k::DeviceLayer)));
    auto* h = host_.get<k::DeviceLayer>();
    for (std::size_t i = 0; i < layers.size(); ++i) h[i] = device_layer(layers[i]);
    device_ = device_alloc(host_.bytes());
    if (!layers.empty())
      EFSIGN_CUDA_CHECK(cudaMemcpy(device_.get(), host_.get(), host_.bytes(), cudaMemcpyHostToDevice));
    chunks_ = upload(plan_.chunks);
    first_ = upload(plan_.layer_first_chunk);
    partials_ = device_alloc(static_cast<int64_t>(std::max<std::size_t>(plan_.chunks.size(), 1) * sizeof(double)));
    counters_ = device_alloc(static_cast<int64_t>(std::max<std::size_t>(layers.size(), 1) * sizeof(uint32_t)));
  }
  int64_t size() const override { return static_cast<int64_t>(layers_.size()); }
  const CodecLayer& layer(int64_t i) const override { return layers_[i]; }
  void set_grad(int64_t i, const float* grad) override {
    layers_[i].grad = grad;
    host_.get<k::DeviceLayer>()[i].grad = grad;
    dirty_ = true;
  }

  // Uploads changed grad pointers on `stream`. The pinned source is not written again
  // before the copy has run: set_grad is not called while the set's work is in flight.
  void sync(cudaStream_t stream) {
    if (!dirty_) return;
    EFSIGN_CUDA_CHECK(cudaMemcpyAsync(device_.get(), host_.get(), host_.bytes(), cudaMemcpyHostToDevice, stream));
    dirty_ = false;
  }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  int num_chunks() const { return static_cast<int>(plan_.chunks.size()); }
  const k::DeviceLayer* layers() const { return device_.get<const k::DeviceLayer>(); }
  const k::Chunk* chunks() const { return chunks_.get<const k::Chunk>(); }
  const int32_t* first_chunk() const { return first_.get<const int32_t>(); }
  double* partials() const { return partials_.get<double>(); }
  uint32_t* counters() const { return counters_.get<uint32_t>(); }

 private:
  std::vector<CodecLayer> layers_;
  k::ChunkPlan plan_;
  CodecBuffer host_, device_, chunks_, first_, partials_, counters_;
  bool dirty_ = false;
};

// dst[dst_index[i]] = src[src_index[i]], the runs expanded once.
class CudaGatherPlan final : public GatherPlan {
 public:
  explicit CudaGatherPlan(const std::vector<CopyRun>& runs) {
    std::vector<int64_t> src, dst;
    for (const CopyRun& r : runs)
      for (int64_t i = 0; i < r.len; ++i) {
        src.push_back(r.src + i);
        dst.push_back(r.dst + i);
      }
    n_ = static_cast<int64_t>(src.size());
    src_ = upload(src);
    dst_ = upload(dst);
  }
  int64_t n_ = 0;
  CodecBuffer src_, dst_;
};

// A non-blocking stream, destroyed with its owner.
class OwnedStream {
 public:
  OwnedStream() { EFSIGN_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~OwnedStream() {
    if (s_) cudaStreamDestroy(s_);
  }
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class CudaEvent final : public CodecEvent {
 public:
  CudaEvent() { EFSIGN_CUDA_CHECK(cudaEventCreate(&e_)); }
  ~CudaEvent() override {
    if (e_) cudaEventDestroy(e_);
  }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

class CudaCodec final : public Codec {
 public:
  CudaCodec(int device, bool emulated) : device_(device), emulated_(emulated) {
    int count = 0;
    EFSIGN_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
      throw UsageError(fmt::format("GPU {} requested but this host has {} ({}): run at most {} ranks per node, "
                                   "or share one GPU between ranks with --comm mpi",
                                   device, count, where_am_i(), count));
    DeviceGuard g(device_);
    own_ = std::make_unique<OwnedStream>();
    stream_ = own_->get();
    flag_ = device_alloc(sizeof(uint32_t));
  }
  ~CudaCodec() override {
    // Work still queued reads buffers its owners free next: let it finish.
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
  }
  CudaCodec(const CudaCodec&) = delete;
  CudaCodec& operator=(const CudaCodec&) = delete;

  DeviceKind device_kind() const override { return DeviceKind::kCuda; }
  int device_index() const override { return device_; }
  bool emulated() const override { return emulated_; }
  std::string describe() const override {
    return emulated_ ? std::string("cuda (emulated on the host)") : fmt::format("cuda:{}", device_);
  }

  std::unique_ptr<LayerSet> prepare(const std::vector<CodecLayer>& layers) override {
    DeviceGuard g(device_);
    return std::make_unique<CudaLayerSet>(layers);
  }

  void compress(LayerSet& set, const codec::CompressParams& params, float* prev_scales, uint32_t* message) override {
    DeviceGuard g(device_);
    auto& s = static_cast<CudaLayerSet&>(set);
    s.sync(stream_);
    k::compress_launch(s.layers(), s.num_layers(), s.chunks(), s.num_chunks(), s.first_chunk(), params, prev_scales,
                       s.partials(), s.counters(), message, stream_);
  }

  void decode(LayerSet& set, const uint32_t* blocks, int world, int64_t stride, DecodeMode mode) override {
    DeviceGuard g(device_);
    auto& s = static_cast<CudaLayerSet&>(set);
    s.sync(stream_);
    const k::DecodeMode m = mode == DecodeMode::kApply ? k::DecodeMode::kApply
                            : mode == DecodeMode::kAdd ? k::DecodeMode::kAdd
                                                       : k::DecodeMode::kVote;
    k::decode_launch(s.layers(), s.num_layers(), s.chunks(), s.num_chunks(), blocks, world, stride, m, stream_);
  }

  void error_from_state(LayerSet& set, const uint32_t* scale_words) override {
    DeviceGuard g(device_);
    auto& s = static_cast<CudaLayerSet&>(set);
    s.sync(stream_);
    k::error_from_state_launch(s.layers(), s.num_layers(), s.chunks(), s.num_chunks(), scale_words, stream_);
  }

  void flatten(LayerSet& set, float* flat) override {
    DeviceGuard g(device_);
    auto& s = static_cast<CudaLayerSet&>(set);
    s.sync(stream_);
    k::gather_grads_launch(s.layers(), s.num_layers(), s.chunks(), s.num_chunks(), flat, stream_);
  }

  void sgdm_update(LayerSet& set, const float* flat, int world, const SgdmParams& p) override {
    DeviceGuard g(device_);
    auto& s = static_cast<CudaLayerSet&>(set);
    s.sync(stream_);
    k::sgdm_update_launch(s.layers(), s.num_layers(), s.chunks(), s.num_chunks(), flat, world, p.lr, p.weight_decay,
                          p.momentum, stream_);
  }

  bool all_finite(const float* data, int64_t n) override {
    DeviceGuard g(device_);
    k::nonfinite_count_launch(data, n, flag_.get<uint32_t>(), stream_);
    uint32_t count = 0;
    EFSIGN_CUDA_CHECK(cudaMemcpyAsync(&count, flag_.get(), sizeof count, cudaMemcpyDeviceToHost, stream_));
    EFSIGN_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return count == 0;
  }

  std::unique_ptr<GatherPlan> prepare_gather(const std::vector<CopyRun>& runs) override {
    DeviceGuard g(device_);
    return std::make_unique<CudaGatherPlan>(runs);
  }
  void gather(const GatherPlan& plan, const uint32_t* src, uint32_t* dst) override {
    DeviceGuard g(device_);
    const auto& p = static_cast<const CudaGatherPlan&>(plan);
    k::gather_u32_launch(src, p.src_.get<const int64_t>(), dst, p.dst_.get<const int64_t>(), p.n_, stream_);
  }

  CodecBuffer allocate(int64_t bytes) override {
    DeviceGuard g(device_);
    return device_alloc(bytes);
  }
  CodecBuffer allocate_staging(int64_t bytes) override {
    DeviceGuard g(device_);
    return pinned_alloc(bytes);
  }
  void copy(void* dst, const void* src, int64_t bytes) override {
    if (bytes == 0) return;
    DeviceGuard g(device_);
    EFSIGN_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(bytes), cudaMemcpyDefault, stream_));
  }

  void set_stream(void* stream) override { stream_ = static_cast<cudaStream_t>(stream); }
  std::unique_ptr<CodecEvent> record() override { return record_on(stream_); }
  std::unique_ptr<CodecEvent> record_on(void* stream) override {
    DeviceGuard g(device_);
    auto e = std::make_unique<CudaEvent>();
    EFSIGN_CUDA_CHECK(cudaEventRecord(e->get(), static_cast<cudaStream_t>(stream)));
    return e;
  }
  void wait(const CodecEvent& event) override { wait_on(event, stream_); }
  void wait_on(const CodecEvent& event, void* stream) override {
    DeviceGuard g(device_);
    EFSIGN_CUDA_CHECK(
        cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<const CudaEvent&>(event).get(), 0));
  }
  void synchronize() override {
    DeviceGuard g(device_);
    EFSIGN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  double elapsed_ms(const CodecEvent& from, const CodecEvent& to) override {
    float ms = 0;
    const cudaError_t rc = cudaEventElapsedTime(&ms, static_cast<const CudaEvent&>(from).get(),
                                                static_cast<const CudaEvent&>(to).get());
    if (rc != cudaSuccess) {
      cudaGetLastError();  // not complete or not timed: not measured
      return -1.0;
    }
    return ms;
  }

 private:
  int device_;
  bool emulated_;
  std::unique_ptr<OwnedStream> own_;
  cudaStream_t stream_ = nullptr;
  CodecBuffer flag_;  // count_nonfinite's result
};

}  // namespace
#if defined(EFSIGN_CUDA_EMULATION)
}  // namespace cuda_emu_codec

std::shared_ptr<Codec> make_emulated_cuda_codec() { return std::make_shared<cuda_emu_codec::CudaCodec>(0, true); }
#else
}  // namespace cuda_codec

std::shared_ptr<Codec> make_cuda_codec(int device) { return std::make_shared<cuda_codec::CudaCodec>(device, false); }
#endif

}  // namespace efsign
