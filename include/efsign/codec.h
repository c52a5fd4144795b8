// efsign/codec.h — the sign codec behind one interface, with two implementations:
// the host codec (the CPU paths of efsign/sign_codec.h, which are the specification)
// and the CUDA codec (the kernels of kernels/sign_kernels.h). The exchange
// (efsign/exchange.h) and the optimizers drive a Codec and never ask which one they
// hold: the optimizer decides what is sent, the codec how it is encoded, the
// communicator only moves bytes.
//
// Memory. A codec works on its own memory: host memory for the host codec, the
// device memory of one GPU for the CUDA codec. Every pointer given to a Codec method
// points there unless the method says otherwise; allocate() hands out such memory.
//
// Ordering. The CUDA codec queues its work on its stream (by default a non-blocking
// stream of its own; set_stream) and returns at once; record()/wait() order it against
// other streams, synchronize() makes the host wait. The host codec works synchronously and
// these calls do nothing. A set's grad pointers (set_grad) are read by the next call
// that uses the set; they must not change while work queued on the set is in flight
// (the exchange synchronises the host once per step, before anyone sets them again).
//
// Arithmetic. Both produce the same words, EF state, momentum and parameters for the
// same inputs; the CUDA codec's per-layer L1 sum runs in a different (fixed) order, so
// its scales agree with the host's to float rounding (Note [bit-exact arithmetic] in
// sign_codec.h) and exactly when the inputs are exact by construction.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "efsign/sign_codec.h"

namespace efsign {

enum class DeviceKind { kCpu, kCuda };

// One layer, or one segment of a layer, as a codec sees it. The fields each operation
// reads are listed with the operation.
struct CodecLayer {
  const float* grad = nullptr;  // gradient (compress), addend (decode kAdd), p (error_from_state)
  float* param = nullptr;       // x: read for weight decay, updated by decode; kAdd/error_from_state: output
  float* momentum = nullptr;    // compress: signum's momentum, or nullptr
  float* state = nullptr;       // compress: EF state c (Note [error state as p]), or nullptr
  int64_t n = 0;                // elements
  int64_t word_offset = 0;      // first word of this layer inside a block (message)
  int64_t scale_index = 0;      // word index of this layer's scale inside a block
  int64_t elem_offset = 0;      // first element inside a flat fp32 buffer (sgdm)
};

// How decode() turns W blocks of signs into an update:
//   kApply  param -= (1/W) sum_w s_w sign_w          (codec::decode_blocks, apply)
//   kAdd    param  = grad + (1/W) sum_w s_w sign_w   (codec::decode_add; grad = addend)
//   kVote   param -= mean_w(s_w) sign(sum_w sign_w)  (codec::vote_apply; a tie moves nothing)
enum class DecodeMode { kApply, kAdd, kVote };

// dst[dst + i] = src[src + i] for i < len, in uint32 words.
struct CopyRun {
  int64_t src = 0, dst = 0, len = 0;
};

// The uncompressed baseline's update (optimizer.h): g = flat / W ; g = g + wd x ;
// m = beta m + g ; x = x - lr m.
struct SgdmParams {
  float lr = 0.0f, weight_decay = 0.0f, momentum = 0.0f;
};

// A fixed list of layers, prepared once by the codec that made it.
class LayerSet {
 public:
  virtual ~LayerSet() = default;
  virtual int64_t size() const = 0;
  virtual const CodecLayer& layer(int64_t i) const = 0;
  virtual void set_grad(int64_t i, const float* grad) = 0;
};

// A fixed list of CopyRuns, prepared once by the codec that made it.
class GatherPlan {
 public:
  virtual ~GatherPlan() = default;
};

// A point in a stream's work (CUDA event); the host codec's are always complete.
class CodecEvent {
 public:
  virtual ~CodecEvent() = default;
};

// Owns `bytes` of memory from Codec::allocate or allocate_staging; move-only.
class CodecBuffer {
 public:
  using Free = void (*)(void*);
  CodecBuffer() = default;
  CodecBuffer(void* ptr, int64_t bytes, Free free) : ptr_(ptr), bytes_(bytes), free_(free) {}
  CodecBuffer(CodecBuffer&& o) noexcept { swap(o); }
  CodecBuffer& operator=(CodecBuffer&& o) noexcept {
    CodecBuffer(std::move(o)).swap(*this);
    return *this;
  }
  CodecBuffer(const CodecBuffer&) = delete;
  CodecBuffer& operator=(const CodecBuffer&) = delete;
  ~CodecBuffer() {
    if (ptr_ && free_) free_(ptr_);
  }
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  int64_t bytes() const { return bytes_; }

 private:
  void swap(CodecBuffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(free_, o.free_);
  }
  void* ptr_ = nullptr;
  int64_t bytes_ = 0;
  Free free_ = nullptr;
};

class Codec {
 public:
  virtual ~Codec() = default;
  virtual DeviceKind device_kind() const = 0;
  virtual int device_index() const { return -1; }  // the GPU, for the CUDA codec
  virtual std::string describe() const = 0;       // "cpu avx2", "cuda:0"
  // True for the emulated CUDA codec (make_emulated_cuda_codec): host memory.
  virtual bool emulated() const { return false; }

  virtual std::unique_ptr<LayerSet> prepare(const std::vector<CodecLayer>& layers) = 0;
  // For every layer l of the set (codec::compress_layer): reads grad, param (when
  // params.weight_decay != 0), momentum, state and prev_scales[l] (the scale sent with
  // the state); writes momentum, state, the words at message + word_offset, the scale's
  // bits at message[scale_index], and prev_scales[l] = the scale. A layer whose grad is
  // nullptr (no gradient this step) is skipped, as the reference skips a parameter
  // without one: zero words, scale +0, and its state, momentum and prev_scales[l] untouched.
  virtual void compress(LayerSet& set, const codec::CompressParams& params, float* prev_scales,
                        uint32_t* message) = 0;
  // `world` blocks `stride` words apart: block w holds layer l's words at
  // w * stride + word_offset and its scale at w * stride + scale_index (DecodeMode).
  virtual void decode(LayerSet& set, const uint32_t* blocks, int world, int64_t stride, DecodeMode mode) = 0;
  // param = grad - s sign(grad), s = the float at scale_words[scale_index] (codec::error_from_state).
  virtual void error_from_state(LayerSet& set, const uint32_t* scale_words) = 0;
  // sgdm: flat[elem_offset + i] = grad[i] (zeros for a grad of nullptr) and the layer's
  // presence flat[scale_index] = 1 (0 without a gradient); after the allreduce, the
  // update of SgdmParams for every layer whose summed presence is not 0.
  virtual void flatten(LayerSet& set, float* flat) = 0;
  virtual void sgdm_update(LayerSet& set, const float* flat, int world, const SgdmParams& params) = 0;

  // True if every one of the n floats at `data` is finite; the host waits for the answer.
  virtual bool all_finite(const float* data, int64_t n) = 0;

  virtual std::unique_ptr<GatherPlan> prepare_gather(const std::vector<CopyRun>& runs) = 0;
  virtual void gather(const GatherPlan& plan, const uint32_t* src, uint32_t* dst) = 0;

  // Zeroed codec memory / host memory that copy() moves fastest (pinned for CUDA).
  virtual CodecBuffer allocate(int64_t bytes) = 0;
  virtual CodecBuffer allocate_staging(int64_t bytes) = 0;
  // Copies `bytes` between any two of: codec memory, host memory (queued on the stream).
  virtual void copy(void* dst, const void* src, int64_t bytes) = 0;

  // CUDA streams are cudaStream_t values passed as void*; nullptr is the legacy
  // default stream (LibTorch's default stream), not "none".
  virtual void set_stream(void* /*stream*/) {}  // queue this codec's work there from now on
  // An event at the current end of this codec's stream / of `stream`.
  virtual std::unique_ptr<CodecEvent> record() = 0;
  virtual std::unique_ptr<CodecEvent> record_on(void* stream) = 0;
  // This codec's stream / `stream` waits for `event`, without the host waiting.
  virtual void wait(const CodecEvent& /*event*/) {}
  virtual void wait_on(const CodecEvent& /*event*/, void* /*stream*/) {}
  virtual void synchronize() {}  // the host waits for this codec's stream
  // Milliseconds between two completed events (CUDA); -1 where not measured.
  virtual double elapsed_ms(const CodecEvent& /*from*/, const CodecEvent& /*to*/) { return -1.0; }
};

// The CPU codec on `isa`'s path (a UsageError if this CPU lacks it).
std::shared_ptr<Codec> make_host_codec(codec::Isa isa);
// The CUDA codec on GPU `device` (an Error when efsign was built without CUDA).
std::shared_ptr<Codec> make_cuda_codec(int device);
// For tests: the CUDA codec's kernels and memory management, run on the host by the
// CUDA emulation of kernels/emu (host memory stands in for device memory).
std::shared_ptr<Codec> make_emulated_cuda_codec();

}  // namespace efsign
