// The host codec: efsign/codec.h over the CPU paths of efsign/sign_codec.h, one call
// per layer, synchronously.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "efsign/codec.h"
#include "efsign/error.h"

namespace efsign {
namespace {

class HostLayerSet final : public LayerSet {
 public:
  explicit HostLayerSet(const std::vector<CodecLayer>& layers) : layers_(layers) {}
  int64_t size() const override { return static_cast<int64_t>(layers_.size()); }
  const CodecLayer& layer(int64_t i) const override { return layers_[i]; }
  void set_grad(int64_t i, const float* grad) override { layers_[i].grad = grad; }

 private:
  std::vector<CodecLayer> layers_;
};

class HostGatherPlan final : public GatherPlan {
 public:
  explicit HostGatherPlan(const std::vector<CopyRun>& runs) : runs(runs) {}
  std::vector<CopyRun> runs;
};

class HostEvent final : public CodecEvent {};

// 64-byte aligned: the SIMD paths stream whole cache lines.
void* aligned_zeroed(int64_t bytes) {
  constexpr std::size_t kAlign = 64;
  const std::size_t n = (static_cast<std::size_t>(bytes) + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, n == 0 ? kAlign : n);
  if (!p) throw Error(fmt::format("host codec: cannot allocate {} bytes", bytes));
  std::memset(p, 0, n);
  return p;
}

class HostCodec final : public Codec {
 public:
  explicit HostCodec(codec::Isa isa) : isa_(isa) {
    if (!codec::isa_available(isa))
      throw UsageError(fmt::format("codec path '{}' is not supported by this CPU", codec::isa_name(isa)));
  }
  DeviceKind device_kind() const override { return DeviceKind::kCpu; }
  std::string describe() const override { return fmt::format("cpu {}", codec::isa_name(isa_)); }

  std::unique_ptr<LayerSet> prepare(const std::vector<CodecLayer>& layers) override {
    return std::make_unique<HostLayerSet>(layers);
  }

  void compress(LayerSet& set, const codec::CompressParams& params, float* prev_scales, uint32_t* message) override {
    for (int64_t i = 0; i < set.size(); ++i) {
      const CodecLayer& l = set.layer(i);
      if (l.n == 0) {  // an empty layer: no words; its scale as the kernels write it
        const float s = params.scale_mode == codec::ScaleMode::kFixed ? params.fixed_scale : 0.0f;
        message[l.scale_index] = codec::float_to_bits(s);
        prev_scales[i] = s;
        continue;
      }
      if (!l.grad) {  // skipped: zero words, scale +0, state, momentum and prev_scales untouched
        std::memset(message + l.word_offset, 0, 4 * static_cast<std::size_t>(words_for(l.n)));
        message[l.scale_index] = codec::float_to_bits(0.0f);
        continue;
      }
      codec::LayerBuffers buf;
      buf.grad = Span<const float>(l.grad, l.n);
      if (params.weight_decay != 0.0f) buf.param = Span<const float>(l.param, l.n);
      if (l.momentum) buf.momentum = Span<float>(l.momentum, l.n);
      if (l.state) buf.state = Span<float>(l.state, l.n);
      buf.prev_scale = prev_scales[i];
      buf.words = Span<uint32_t>(message + l.word_offset, words_for(l.n));
      const float s = codec::compress_layer(buf, params, isa_);
      message[l.scale_index] = codec::float_to_bits(s);
      prev_scales[i] = s;
    }
  }

  void decode(LayerSet& set, const uint32_t* blocks, int world, int64_t stride, DecodeMode mode) override {
    for (int64_t i = 0; i < set.size(); ++i) {
      const CodecLayer& l = set.layer(i);
      // The span covers exactly what this layer reads in the W blocks (bounds checked there).
      const int64_t extent = (world - 1) * stride + std::max(l.word_offset + words_for(l.n), l.scale_index + 1);
      const Span<const uint32_t> all(blocks, static_cast<std::size_t>(extent));
      Span<float> x(l.param, l.n);
      switch (mode) {
        case DecodeMode::kApply:
          codec::decode_blocks(all, world, stride, l.word_offset, l.scale_index, x, /*apply=*/true, isa_);
          break;
        case DecodeMode::kAdd:
          codec::decode_add(all, world, stride, l.word_offset, l.scale_index, Span<const float>(l.grad, l.n), x, isa_);
          break;
        case DecodeMode::kVote:
          codec::vote_apply(all, world, stride, l.word_offset, l.scale_index, x, isa_);
          break;
      }
    }
  }

  void error_from_state(LayerSet& set, const uint32_t* scale_words) override {
    for (int64_t i = 0; i < set.size(); ++i) {
      const CodecLayer& l = set.layer(i);
      codec::error_from_state(Span<const float>(l.grad, l.n), codec::bits_to_float(scale_words[l.scale_index]),
                              Span<float>(l.param, l.n));
    }
  }

  void flatten(LayerSet& set, float* flat) override {
    for (int64_t i = 0; i < set.size(); ++i) {
      const CodecLayer& l = set.layer(i);
      if (l.grad) std::memcpy(flat + l.elem_offset, l.grad, 4 * static_cast<std::size_t>(l.n));
      else std::memset(flat + l.elem_offset, 0, 4 * static_cast<std::size_t>(l.n));
      flat[l.scale_index] = l.grad ? 1.0f : 0.0f;
    }
  }

  void sgdm_update(LayerSet& set, const float* flat, int world, const SgdmParams& p) override {
    const float wf = static_cast<float>(world);
    for (int64_t i = 0; i < set.size(); ++i) {
      const CodecLayer& l = set.layer(i);
      if (flat[l.scale_index] == 0.0f) continue;  // no rank had a gradient: skipped
      float* __restrict__ x = l.param;
      float* __restrict__ m = l.momentum;
      const float* __restrict__ g = flat + l.elem_offset;
      for (int64_t k = 0; k < l.n; ++k) {
        float gi = g[k] / wf;
        gi = gi + p.weight_decay * x[k];
        const float mi = p.momentum * m[k] + gi;
        m[k] = mi;
        x[k] = x[k] - p.lr * mi;
      }
    }
  }

  bool all_finite(const float* data, int64_t n) override {
    float probe = 0.0f;  // x * 0 is 0 for finite x and NaN otherwise: one vectorisable pass
    for (int64_t i = 0; i < n; ++i) probe += data[i] * 0.0f;
    return std::isfinite(probe);
  }

  std::unique_ptr<GatherPlan> prepare_gather(const std::vector<CopyRun>& runs) override {
    return std::make_unique<HostGatherPlan>(runs);
  }
  void gather(const GatherPlan& plan, const uint32_t* src, uint32_t* dst) override {
    for (const CopyRun& r : static_cast<const HostGatherPlan&>(plan).runs)
      if (r.len) std::memcpy(dst + r.dst, src + r.src, 4 * static_cast<std::size_t>(r.len));
  }

  CodecBuffer allocate(int64_t bytes) override { return CodecBuffer(aligned_zeroed(bytes), bytes, std::free); }
  CodecBuffer allocate_staging(int64_t bytes) override { return allocate(bytes); }
  void copy(void* dst, const void* src, int64_t bytes) override {
    if (bytes) std::memcpy(dst, src, static_cast<std::size_t>(bytes));
  }
  std::unique_ptr<CodecEvent> record() override { return std::make_unique<HostEvent>(); }
  std::unique_ptr<CodecEvent> record_on(void*) override { return std::make_unique<HostEvent>(); }

 private:
  codec::Isa isa_;
};

}  // namespace

std::shared_ptr<Codec> make_host_codec(codec::Isa isa) { return std::make_shared<HostCodec>(isa); }

#if !defined(EFSIGN_HAVE_CUDA_CODEC)
std::shared_ptr<Codec> make_cuda_codec(int) {
  throw UsageError("efsign was built without the CUDA codec (no nvcc or NCCL at configure time)");
}
#endif

}  // namespace efsign
