// The CUDA kernels against their CPU specification (efsign/sign_codec.h and the CPU
// sgdm loop): words, EF state, momentum and parameters bit-exact, scales to 1e-6.
// [gpu] tests need a CUDA device and SKIP with a visible warning without one; the
// [kernels] test (ChunkPlan) is host-only and always runs.
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_check.h"
#include "efsign/layer_table.h"
#include "efsign/sign_codec.h"
#include "model_tables.h"
#include "sign_kernels.h"

using namespace efsign;
namespace k = efsign::kernels;
using codec::Isa;

namespace {

// True when a CUDA device is usable; otherwise `why` says why not.
bool have_gpu(std::string& why) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    why = cudaGetErrorString(rc);
    cudaGetLastError();
    return false;
  }
  if (count == 0) {
    why = "cudaGetDeviceCount returned 0";
    return false;
  }
  return true;
}

#define SKIP_WITHOUT_GPU()                                     \
  do {                                                         \
    std::string why_;                                          \
    if (!have_gpu(why_)) {                                     \
      WARN("SKIPPED: no CUDA device (" << why_ << ")");        \
      return;                                                  \
    }                                                          \
  } while (0)

// Owns count elements of device memory.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    if (count_ > 0) EFSIGN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), count_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == count_);
    if (count_ > 0) EFSIGN_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_ > 0) EFSIGN_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* ptr_ = nullptr;
  std::size_t count_ = 0;
};

// The plan of a layer table, on the device.
struct DevicePlan {
  explicit DevicePlan(const std::vector<int64_t>& sizes)
      : plan(k::ChunkPlan::build(sizes)), chunks(plan.chunks), first(plan.layer_first_chunk) {}
  int num_chunks() const { return static_cast<int>(plan.chunks.size()); }
  k::ChunkPlan plan;
  DeviceBuffer<k::Chunk> chunks;
  DeviceBuffer<int32_t> first;
};

constexpr float kDenormMin = std::numeric_limits<float>::denorm_min();

// Normal(0, scale) values with -0.0, +-denorm_min and exact zeros sprinkled in.
void fill_random(std::vector<float>& v, std::mt19937& rng, float scale) {
  std::normal_distribution<float> nd(0.0f, scale);
  for (std::size_t i = 0; i < v.size(); ++i) {
    switch (i % 101) {
      case 3: v[i] = -0.0f; break;
      case 17: v[i] = kDenormMin; break;
      case 29: v[i] = -kDenormMin; break;
      case 41: v[i] = 0.0f; break;
      default: v[i] = nd(rng);
    }
  }
}

// Empty when a and b hold the same bytes; otherwise where and how they first differ.
template <typename T>
std::string mismatch(const std::vector<T>& gpu, const std::vector<T>& cpu) {
  if (gpu.size() != cpu.size()) return "sizes differ: " + std::to_string(gpu.size()) + " vs " + std::to_string(cpu.size());
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(T)) == 0) continue;
    std::ostringstream os;
    os << "first mismatch at " << i << ": ";
    if constexpr (std::is_integral_v<T>)
      os << std::hex << "gpu 0x" << gpu[i] << " cpu 0x" << cpu[i];
    else
      os << std::hexfloat << "gpu " << gpu[i] << " cpu " << cpu[i];
    return os.str();
  }
  return {};
}

template <typename T>
void require_bit_exact(const char* what, const std::vector<T>& gpu, const std::vector<T>& cpu) {
  const std::string m = mismatch(gpu, cpu);
  INFO(what << ": " << m);
  REQUIRE(m.empty());
}

using codec::bits_to_float;
using codec::float_to_bits;

std::vector<k::DeviceLayer> device_layers(const LayerTable& table, const float* grad, float* param, float* momentum,
                                          float* state) {
  std::vector<k::DeviceLayer> out(table.num_layers());
  for (int64_t l = 0; l < table.num_layers(); ++l) {
    const int64_t off = table.elem_offset(l);
    out[l].grad = grad ? grad + off : nullptr;
    out[l].param = param ? param + off : nullptr;
    out[l].momentum = momentum ? momentum + off : nullptr;
    out[l].state = state ? state + off : nullptr;
    out[l].n = table.size(l);
    out[l].word_offset = table.word_offset(l);
    out[l].elem_offset = off;
  }
  return out;
}

struct NamedTable {
  std::string name;
  std::vector<int64_t> sizes;
};

std::vector<NamedTable> test_tables() {
  std::vector<NamedTable> t;
  for (int64_t n : {1, 31, 32, 33, 4097, 1000003}) t.push_back({"one layer of " + std::to_string(n), {n}});
  t.push_back({"resnet18/cifar100", k::resnet18_cifar_sizes(100)});
  return t;
}

}  // namespace

TEST_CASE("ChunkPlan: chunks stay inside a layer and cover every word once", "[kernels]") {
  const int64_t cw = k::ChunkPlan::kWordsPerChunk;
  std::vector<int64_t> sizes{1, 31, 32, 33, 0, 32 * cw, 32 * cw + 1, 3 * 32 * cw, 1000003};
  const auto resnet = k::resnet18_cifar_sizes(100);
  REQUIRE(std::accumulate(resnet.begin(), resnet.end(), int64_t{0}) == 11220132);
  REQUIRE(resnet.size() == 62u);
  sizes.insert(sizes.end(), resnet.begin(), resnet.end());

  const k::ChunkPlan plan = k::ChunkPlan::build(sizes);
  const int64_t L = static_cast<int64_t>(sizes.size());
  REQUIRE(static_cast<int64_t>(plan.layer_first_chunk.size()) == L + 1);
  REQUIRE(plan.layer_first_chunk.front() == 0);
  REQUIRE(plan.layer_first_chunk.back() == static_cast<int32_t>(plan.chunks.size()));
  for (int64_t l = 0; l < L; ++l) {
    INFO("layer " << l << " of " << sizes[l] << " elements");
    const int32_t b = plan.layer_first_chunk[l], e = plan.layer_first_chunk[l + 1];
    REQUIRE(b <= e);
    const int64_t words = words_for(sizes[l]);
    CHECK(e - b == (words + cw - 1) / cw);
    int64_t next = 0;  // chunks of a layer are in order, contiguous, within the layer
    for (int32_t c = b; c < e; ++c) {
      const k::Chunk& ch = plan.chunks[c];
      REQUIRE(ch.layer == l);
      REQUIRE(ch.first_word == next);
      REQUIRE(ch.num_words >= 1);
      REQUIRE(ch.num_words <= cw);
      next += ch.num_words;
    }
    REQUIRE(next == words);
  }
  CHECK(k::ChunkPlan::build({}).chunks.empty());
  CHECK(k::ChunkPlan::build({}).layer_first_chunk == std::vector<int32_t>{0});
  CHECK_THROWS_AS(k::ChunkPlan::build({5, -1}), Error);
}

TEST_CASE("compress_launch matches codec::compress_layer bit for bit", "[gpu]") {
  SKIP_WITHOUT_GPU();
  for (const NamedTable& nt : test_tables()) {
    const LayerTable table(nt.sizes);
    const int64_t N = table.total_elements(), L = table.num_layers();
    const DevicePlan plan(nt.sizes);
    DeviceBuffer<float> d_grad(N), d_param(N), d_mom(N), d_state(N), d_prev(L);
    DeviceBuffer<double> d_partials(std::max(1, plan.num_chunks()));
    DeviceBuffer<uint32_t> d_msg(table.message_words());
    // Inputs drawn once per table (normal draws dominate the run time); reused per variant.
    std::mt19937 rng(1234u);
    std::vector<float> param(N), momentum0(N), state0(N);
    std::vector<std::vector<float>> grads(3, std::vector<float>(N));
    fill_random(param, rng, 1.0f);
    fill_random(momentum0, rng, 0.1f);
    fill_random(state0, rng, 0.01f);
    for (auto& g : grads) fill_random(g, rng, 1.0f);
    d_param.upload(param);

    // Every combination of weight decay, momentum, EF state, and mean-|p| or fixed scale.
    for (int combo = 0; combo < 16; ++combo) {
      const bool wd = combo & 1, mom = combo & 2, ef = combo & 4, fixed = combo & 8;
      INFO(nt.name << ": weight decay " << wd << ", momentum " << mom << ", EF " << ef << ", fixed scale " << fixed);
      std::vector<float> momentum = momentum0, state = state0;
      d_mom.upload(momentum);
      d_state.upload(state);
      std::vector<float> prev(L);
      for (int64_t l = 0; l < L; ++l) prev[l] = 0.005f + 0.001f * static_cast<float>(l % 7);
      d_prev.upload(prev);

      k::CompressConfig cc;
      cc.lr = 0.1f;
      cc.weight_decay = wd ? 5e-4f : 0.0f;
      cc.momentum = 0.9f;
      cc.fixed_scale = fixed;
      cc.fixed_scale_value = cc.lr;
      codec::CompressParams cp;
      cp.lr = cc.lr;
      cp.weight_decay = cc.weight_decay;
      cp.momentum = cc.momentum;
      cp.scale_mode = fixed ? codec::ScaleMode::kFixed : codec::ScaleMode::kMeanAbs;
      cp.fixed_scale = cc.fixed_scale_value;

      DeviceBuffer<k::DeviceLayer> d_layers(device_layers(table, d_grad.get(), d_param.get(),
                                                          mom ? d_mom.get() : nullptr, ef ? d_state.get() : nullptr));
      for (int step = 0; step < 3; ++step) {
        INFO("step " << step);
        const std::vector<float>& grad = grads[step];
        d_grad.upload(grad);
        d_msg.upload(std::vector<uint32_t>(table.message_words(), 0xdeadbeefu));  // every word must be written
        k::compress_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(), plan.first.get(),
                           table.total_words(), cc, d_prev.get(), d_partials.get(), d_msg.get(), nullptr);
        EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<uint32_t> gpu_msg = d_msg.download();
        const std::vector<float> gpu_scales = d_prev.download();

        // CPU, layer by layer, from the same state and the same previous scale.
        std::vector<uint32_t> cpu_msg(table.message_words(), 0u);
        for (int64_t l = 0; l < L; ++l) {
          const int64_t off = table.elem_offset(l), n = table.size(l);
          codec::LayerBuffers b;
          b.grad = Span<const float>(grad.data() + off, n);
          b.param = Span<const float>(param.data() + off, n);
          if (mom) b.momentum = Span<float>(momentum.data() + off, n);
          if (ef) b.state = Span<float>(state.data() + off, n);
          b.prev_scale = prev[l];
          b.words = Span<uint32_t>(cpu_msg.data() + table.word_offset(l), table.words(l));
          const float scale = codec::compress_layer(b, cp, Isa::kPortable);
          cpu_msg[table.total_words() + l] = float_to_bits(scale);
        }
        const std::vector<uint32_t> gpu_words(gpu_msg.begin(), gpu_msg.begin() + table.total_words());
        const std::vector<uint32_t> cpu_words(cpu_msg.begin(), cpu_msg.begin() + table.total_words());
        require_bit_exact("message words", gpu_words, cpu_words);
        if (mom) require_bit_exact("momentum", d_mom.download(), momentum);
        if (ef) require_bit_exact("EF state", d_state.download(), state);
        for (int64_t l = 0; l < L; ++l) {
          INFO("layer " << l);
          const float g = gpu_scales[l], c = bits_to_float(cpu_msg[table.total_words() + l]);
          REQUIRE(gpu_msg[table.total_words() + l] == float_to_bits(g));  // message and prev_scales agree
          if (fixed) {
            REQUIRE(g == cc.fixed_scale_value);
          } else {
            REQUIRE(std::isfinite(g));
            REQUIRE(std::fabs(g - c) <= 1e-6f * std::fabs(c));
          }
        }
        prev = gpu_scales;  // the CPU's next step starts from the GPU's scale
      }
    }
  }
}

TEST_CASE("decode_apply_launch matches codec::decode_average_apply bit for bit", "[gpu]") {
  SKIP_WITHOUT_GPU();
  std::vector<int64_t> sizes{1, 31, 32, 33, 4097, 1000003};
  const auto resnet = k::resnet18_cifar_sizes(100);
  sizes.insert(sizes.end(), resnet.begin(), resnet.end());
  const LayerTable table(sizes);
  const int64_t N = table.total_elements(), L = table.num_layers(), mw = table.message_words();
  const DevicePlan plan(sizes);

  for (int world : {1, 2, 3, 8}) {
    INFO("world " << world);
    std::mt19937 rng(99u + world);
    // Messages from the CPU codec, one per rank, from random gradients.
    std::vector<uint32_t> messages(world * mw);
    std::vector<float> grad(N);
    for (int w = 0; w < world; ++w) {
      fill_random(grad, rng, 1.0f);
      for (int64_t l = 0; l < L; ++l) {
        codec::LayerBuffers b;
        b.grad = Span<const float>(grad.data() + table.elem_offset(l), table.size(l));
        b.words = Span<uint32_t>(messages.data() + w * mw + table.word_offset(l), table.words(l));
        codec::CompressParams cp;
        cp.lr = 0.01f * static_cast<float>(w + 1);
        float scale = codec::compress_layer(b, cp, Isa::kPortable);
        if ((w + l) % 9 == 4) scale = 3.0e-39f;  // a denormal scale
        messages[w * mw + table.total_words() + l] = float_to_bits(scale);
      }
    }
    std::vector<float> param(N);
    fill_random(param, rng, 1.0f);

    DeviceBuffer<float> d_param(param);
    DeviceBuffer<uint32_t> d_messages(messages);
    DeviceBuffer<k::DeviceLayer> d_layers(device_layers(table, nullptr, d_param.get(), nullptr, nullptr));
    k::decode_apply_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(),
                           d_messages.get(), world, mw, table.total_words(), nullptr);
    EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());

    for (int64_t l = 0; l < L; ++l)
      codec::decode_average_apply(Span<const uint32_t>(messages), world, table, l,
                                  Span<float>(param.data() + table.elem_offset(l), table.size(l)), Isa::kPortable);
    require_bit_exact("parameters", d_param.download(), param);
  }
}

TEST_CASE("gather_grads_launch and sgdm_update_launch match the CPU sgdm loop bit for bit", "[gpu]") {
  SKIP_WITHOUT_GPU();
  const std::vector<int64_t> sizes{1, 31, 32, 33, 4097, 1000003, 8192, 64, 64};
  const LayerTable table(sizes);
  const int64_t N = table.total_elements(), L = table.num_layers();
  const DevicePlan plan(sizes);
  std::mt19937 rng(7u);
  std::vector<float> grad(N), param(N), momentum(N), flat(N);
  fill_random(grad, rng, 1.0f);
  fill_random(param, rng, 1.0f);
  fill_random(momentum, rng, 0.1f);
  DeviceBuffer<float> d_grad(grad), d_param(param), d_mom(momentum), d_flat(N);
  DeviceBuffer<k::DeviceLayer> d_layers(device_layers(table, d_grad.get(), d_param.get(), d_mom.get(), nullptr));

  d_flat.upload(std::vector<float>(N, std::numeric_limits<float>::quiet_NaN()));
  k::gather_grads_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(), d_flat.get(),
                         nullptr);
  EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
  require_bit_exact("gathered gradients", d_flat.download(), grad);

  // An allreduce result of 3 ranks stands in for the sum.
  const int world = 3;
  const float lr = 0.1f, wd = 5e-4f, beta = 0.9f;
  fill_random(flat, rng, 3.0f);
  d_flat.upload(flat);
  for (int step = 0; step < 2; ++step) {
    INFO("step " << step);
    k::sgdm_update_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(), d_flat.get(),
                          world, lr, wd, beta, nullptr);
    EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
    const float wf = static_cast<float>(world);
    for (int64_t i = 0; i < N; ++i) {  // src/optim/sgdm_optimizer.cpp, with -ffp-contract=off
      float gi = flat[i] / wf;
      gi = gi + wd * param[i];
      const float mi = beta * momentum[i] + gi;
      momentum[i] = mi;
      param[i] = param[i] - lr * mi;
    }
    require_bit_exact("momentum", d_mom.download(), momentum);
    require_bit_exact("parameters", d_param.download(), param);
  }
}

TEST_CASE("copy_launch copies aligned and unaligned ranges", "[gpu]") {
  SKIP_WITHOUT_GPU();
  for (int64_t n : {0, 1, 3, 4, 5, 1023, 1000003}) {
    for (int64_t shift : {0, 1}) {
      INFO(n << " elements, shift " << shift);
      std::mt19937 rng(static_cast<uint32_t>(n));
      std::vector<float> src(n + 1);
      fill_random(src, rng, 1.0f);
      DeviceBuffer<float> d_src(src), d_dst(n + 1);
      d_dst.upload(std::vector<float>(n + 1, -7.0f));
      k::copy_launch(d_src.get() + shift, d_dst.get(), n, nullptr);
      EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<float> want(src.begin() + shift, src.begin() + shift + n);
      want.push_back(-7.0f);  // one past the end stays untouched
      require_bit_exact("copy", d_dst.download(), want);
    }
  }
}
