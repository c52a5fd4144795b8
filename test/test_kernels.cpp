// The CUDA kernels against their CPU specification (efsign/sign_codec.h and the CPU
// sgdm loop): words, EF state, momentum and parameters bit for bit; scales to float
// rounding (one ulp: the GPU's L1 reduction tree differs) and bit for bit where every
// partial sum is exact.
//
// One source, two builds:
//   test_kernels      against the real CUDA runtime and efsign_kernels (nvcc). [gpu]
//                     tests SKIP with a visible warning without a device; [kernels]
//                     tests are host-only and always run.
//   test_kernels_emu  against the CUDA emulation (efsign_kernels_emu; Note [grid
//                     emulation] in kernels/emu/cuda_emu_device.h): the kernels' own
//                     source runs on the host in every CI run, at smaller sizes, plus
//                     the [emu] tests that need the emulation's controls (block order,
//                     launch records).
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_check.h"
#include "device_buffer.h"
#include "efsign/layer_table.h"
#include "efsign/sign_codec.h"
#include "model_tables.h"
#include "sign_kernels.h"
#if defined(EFSIGN_CUDA_EMULATION)
#include "efsign_emu.h"
#endif

using namespace efsign;
namespace k = efsign::kernels;
using codec::bits_to_float;
using codec::float_to_bits;
using codec::Isa;
using k::DeviceBuffer;

namespace {

#if defined(EFSIGN_CUDA_EMULATION)
constexpr bool kEmulated = true;
#else
constexpr bool kEmulated = false;
#endif

// A layer of several chunks (8192 elements each), small enough for the emulation.
constexpr int64_t kMultiChunk = 300007;

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

#define SKIP_WITHOUT_GPU()                              \
  do {                                                  \
    std::string why_;                                   \
    if (!have_gpu(why_)) {                              \
      WARN("SKIPPED: no CUDA device (" << why_ << ")"); \
      return;                                           \
    }                                                   \
  } while (0)

// Note [wire format]'s message layout for layers that may be empty (LayerTable refuses
// those; the kernels must take them: an empty layer, or an empty two-phase segment).
// elem, word: each layer's first element and word, then the totals (L + 1 entries).
struct Layout {
  explicit Layout(std::vector<int64_t> layer_sizes) : sizes(std::move(layer_sizes)) {
    for (int64_t n : sizes) {
      elem.push_back(elem.back() + n);
      word.push_back(word.back() + words_for(n));
    }
  }
  int64_t layers() const { return static_cast<int64_t>(sizes.size()); }
  int64_t scale(int64_t l) const { return word.back() + l; }  // the word of layer l's scale
  int64_t message_words() const { return word.back() + layers(); }
  std::vector<int64_t> sizes, elem{0}, word{0};
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

// compress_launch's workspaces: partials, and arrival counters zeroed once.
struct CompressWorkspace {
  CompressWorkspace(int64_t num_layers, int num_chunks)
      : prev_scales(static_cast<std::size_t>(num_layers)),
        partials(static_cast<std::size_t>(std::max(1, num_chunks))),
        counters(static_cast<std::size_t>(num_layers)) {
    if (num_layers > 0) EFSIGN_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.size() * sizeof(uint32_t)));
  }
  DeviceBuffer<float> prev_scales;
  DeviceBuffer<double> partials;
  DeviceBuffer<uint32_t> counters;
};

constexpr float kDenormMin = std::numeric_limits<float>::denorm_min();

// Normal(0, scale) values with -0.0, +-denorm_min (lr * them rounds to a signed zero),
// a small normal, and exact zeros sprinkled in.
void fill_random(std::vector<float>& v, std::mt19937& rng, float scale) {
  std::normal_distribution<float> nd(0.0f, scale);
  for (std::size_t i = 0; i < v.size(); ++i) {
    switch (i % 101) {
      case 3: v[i] = -0.0f; break;
      case 17: v[i] = kDenormMin; break;
      case 29: v[i] = -kDenormMin; break;
      case 41: v[i] = 0.0f; break;
      case 53: v[i] = -std::numeric_limits<float>::min(); break;
      default: v[i] = nd(rng);
    }
  }
}

// Empty when gpu and cpu hold the same bytes (nan_equal: or NaN where the other has
// NaN, Note [bit-exact arithmetic]); otherwise where and how they first differ.
template <typename T>
std::string mismatch(const std::vector<T>& gpu, const std::vector<T>& cpu, bool nan_equal = false) {
  if (gpu.size() != cpu.size())
    return "sizes differ: " + std::to_string(gpu.size()) + " vs " + std::to_string(cpu.size());
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    if (std::memcmp(&gpu[i], &cpu[i], sizeof(T)) == 0) continue;
    if constexpr (std::is_floating_point_v<T>)
      if (nan_equal && std::isnan(gpu[i]) && std::isnan(cpu[i])) continue;
    std::ostringstream os;
    os << "first mismatch at " << i << " of " << gpu.size() << ": ";
    if constexpr (std::is_integral_v<T>)
      os << std::hex << "gpu 0x" << gpu[i] << " cpu 0x" << cpu[i];
    else
      os << std::hexfloat << "gpu " << gpu[i] << " cpu " << cpu[i];
    return os.str();
  }
  return {};
}

template <typename T>
void require_bit_exact(const char* what, const std::vector<T>& gpu, const std::vector<T>& cpu,
                       bool nan_equal = false) {
  const std::string m = mismatch(gpu, cpu, nan_equal);
  INFO(what << ": " << m);
  REQUIRE(m.empty());
}

// The same float to float rounding: equal, one ulp apart, or both NaN.
bool within_one_ulp(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b || std::nextafter(a, b) == b;
}

std::vector<k::DeviceLayer> device_layers(const Layout& table, const float* grad, float* param, float* momentum,
                                          float* state) {
  std::vector<k::DeviceLayer> out(static_cast<std::size_t>(table.layers()));
  for (int64_t l = 0; l < table.layers(); ++l) {
    const int64_t off = table.elem[l];
    k::DeviceLayer& d = out[static_cast<std::size_t>(l)];
    d.grad = grad ? grad + off : nullptr;
    d.param = param ? param + off : nullptr;
    d.momentum = momentum ? momentum + off : nullptr;
    d.state = state ? state + off : nullptr;
    d.n = table.sizes[l];
    d.word_offset = table.word[l];
    d.scale_index = table.scale(l);
    d.elem_offset = off;
  }
  return out;
}

struct NamedTable {
  std::string name;
  std::vector<int64_t> sizes;
};

// Sizes 0, 1, 31, 32, 33, 1e4+7 and a multi-chunk layer, alone and together; on a GPU
// also 1e6+7 and ResNet-18's 62 tensors.
std::vector<NamedTable> compress_tables() {
  std::vector<NamedTable> t{{"one layer of 1", {1}},
                            {"one layer of 33", {33}},
                            {"one empty layer", {0}},
                            {"seven layers", {1, 31, 0, 32, 33, 10007, kMultiChunk}}};
  if (!kEmulated) {
    t.push_back({"one layer of 1000003", {1000003}});
    t.push_back({"resnet18/cifar100", k::resnet18_cifar_sizes(100)});
  }
  return t;
}

// The decode test's layers (W up to 13 random messages of them are drawn per world
// size, so ResNet-18's table is left to the compress test).
std::vector<int64_t> decode_sizes() {
  std::vector<int64_t> s{1, 31, 32, 33, 0, 10007, kMultiChunk};
  if (!kEmulated) s.push_back(1000003);
  return s;
}

// The scale compress_layer gives a layer; for an empty layer (which compress_layer
// refuses) what sign_kernels.h specifies: 0, or the fixed scale.
float cpu_compress_layer(codec::LayerBuffers& b, const codec::CompressParams& cp) {
  if (b.grad.empty()) return cp.scale_mode == codec::ScaleMode::kFixed ? cp.fixed_scale : 0.0f;
  return codec::compress_layer(b, cp, Isa::kPortable);
}

// One compress step's inputs; an empty vector is an absent buffer (param: no weight
// decay; momentum; EF state). prev: the previous scale of every layer.
struct CompressInputs {
  std::vector<float> grad, param, momentum, state, prev;
};

// One compress step of every layer on the CPU (the specification): the message;
// in.momentum and in.state are updated.
std::vector<uint32_t> cpu_compress(const Layout& table, CompressInputs& in, const codec::CompressParams& cp) {
  std::vector<uint32_t> msg(static_cast<std::size_t>(table.message_words()), 0u);
  for (int64_t l = 0; l < table.layers(); ++l) {
    const int64_t off = table.elem[l], n = table.sizes[l];
    codec::LayerBuffers b;
    b.grad = Span<const float>(in.grad.data() + off, n);
    if (!in.param.empty()) b.param = Span<const float>(in.param.data() + off, n);
    if (!in.momentum.empty()) b.momentum = Span<float>(in.momentum.data() + off, n);
    if (!in.state.empty()) b.state = Span<float>(in.state.data() + off, n);
    b.prev_scale = in.prev[static_cast<std::size_t>(l)];
    b.words = Span<uint32_t>(msg.data() + table.word[l], table.word[l + 1] - table.word[l]);
    msg[static_cast<std::size_t>(table.scale(l))] = float_to_bits(cpu_compress_layer(b, cp));
  }
  return msg;
}

// What the device holds after compress_launch ran `launches` times, with one set of
// workspaces, on device copies of `in`, for layers placed as `layers` says (n,
// word_offset, scale_index, elem_offset; the buffer pointers are filled in here) into
// a block of `block_words` words set to 0xdeadbeef before every launch (so that every
// word it must write is seen written).
struct CompressResult {
  std::vector<uint32_t> block, counters;
  std::vector<float> prev, momentum, state;
};
CompressResult gpu_compress(std::vector<k::DeviceLayer> layers, int64_t block_words, const CompressInputs& in,
                            const codec::CompressParams& cp, int launches = 1) {
  std::vector<int64_t> sizes;
  for (const k::DeviceLayer& l : layers) sizes.push_back(l.n);
  const DevicePlan plan(sizes);
  const int64_t L = static_cast<int64_t>(layers.size());
  const DeviceBuffer<float> grad(in.grad), param(in.param);
  DeviceBuffer<float> momentum(in.momentum), state(in.state);
  auto at = [](const auto& buf, int64_t off) { return buf.size() ? buf.get() + off : nullptr; };
  for (k::DeviceLayer& l : layers) {
    l.grad = at(grad, l.elem_offset);
    l.param = at(param, l.elem_offset);
    l.momentum = at(momentum, l.elem_offset);
    l.state = at(state, l.elem_offset);
  }
  const DeviceBuffer<k::DeviceLayer> d_layers(layers);
  CompressWorkspace ws(L, plan.num_chunks());
  ws.prev_scales.upload(in.prev);
  DeviceBuffer<uint32_t> block(static_cast<std::size_t>(block_words));
  for (int i = 0; i < launches; ++i) {
    block.upload(std::vector<uint32_t>(static_cast<std::size_t>(block_words), 0xdeadbeefu));
    k::compress_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(), plan.first.get(), cp,
                       ws.prev_scales.get(), ws.partials.get(), ws.counters.get(), block.get(), nullptr);
  }
  EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
  return {block.download(), ws.counters.download(), ws.prev_scales.download(), momentum.download(), state.download()};
}

std::vector<uint32_t> words_of(const Layout& table, const std::vector<uint32_t>& msg) {
  return {msg.begin(), msg.begin() + table.word.back()};
}

// Requires the GPU's scales (in the message and in prev_scales) to be the CPU's: bit
// for bit when `exact` or with a fixed scale, else to float rounding.
void require_scales(const Layout& table, const std::vector<uint32_t>& gpu_msg, const std::vector<float>& gpu_prev,
                    const std::vector<uint32_t>& cpu_msg, bool exact) {
  for (int64_t l = 0; l < table.layers(); ++l) {
    const auto at = static_cast<std::size_t>(table.scale(l));
    const float g = bits_to_float(gpu_msg[at]), c = bits_to_float(cpu_msg[at]);
    INFO("layer " << l << " of " << table.sizes[l] << " elements: gpu scale " << g << ", cpu scale " << c);
    REQUIRE(gpu_msg[at] == float_to_bits(gpu_prev[static_cast<std::size_t>(l)]));  // message and prev_scales agree
    if (exact)
      REQUIRE(gpu_msg[at] == cpu_msg[at]);
    else
      REQUIRE(within_one_ulp(g, c));
  }
}

}  // namespace

TEST_CASE("ChunkPlan: chunks stay inside a layer, cover every word once, and an empty layer gets one", "[kernels]") {
  const int64_t cw = k::ChunkPlan::kWordsPerChunk;
  std::vector<int64_t> sizes{1, 31, 32, 33, 0, 32 * cw, 32 * cw + 1, 3 * 32 * cw, 1000003, 0};
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
    const int64_t words = words_for(sizes[l]);
    REQUIRE(e - b == std::max<int64_t>(1, (words + cw - 1) / cw));
    int64_t next = 0;  // chunks of a layer are in order, contiguous, within the layer
    for (int32_t c = b; c < e; ++c) {
      const k::Chunk& ch = plan.chunks[c];
      REQUIRE(ch.layer == l);
      REQUIRE(ch.first_word == next);
      REQUIRE(ch.num_words >= (words == 0 ? 0 : 1));
      REQUIRE(ch.num_words <= cw);
      next += ch.num_words;
    }
    REQUIRE(next == words);
  }
  CHECK(k::ChunkPlan::build({}).chunks.empty());
  CHECK(k::ChunkPlan::build({}).layer_first_chunk == std::vector<int32_t>{0});
  CHECK_THROWS_AS(k::ChunkPlan::build({5, -1}), Error);
}

TEST_CASE("launchers reject bad arguments before touching the device", "[kernels]") {
  codec::CompressParams cp;
  float f = 0.0f;
  double d = 0.0;
  uint32_t u = 0;
  int32_t i = 0;
  k::DeviceLayer layer;
  k::Chunk chunk;
  CHECK_THROWS_AS(k::compress_launch(&layer, -1, &chunk, 1, &i, cp, &f, &d, &u, &u, nullptr), Error);
  CHECK_THROWS_AS(k::compress_launch(&layer, 0, &chunk, 1, &i, cp, &f, &d, &u, &u, nullptr), Error);
  CHECK_THROWS_AS(k::compress_launch(&layer, 2, &chunk, 1, &i, cp, &f, &d, &u, &u, nullptr), Error);
  CHECK_THROWS_AS(k::compress_launch(&layer, 1, &chunk, 1, &i, cp, &f, nullptr, &u, &u, nullptr), Error);
  CHECK_THROWS_AS(k::compress_launch(&layer, 1, &chunk, 1, &i, cp, &f, &d, nullptr, &u, nullptr), Error);
  CHECK_NOTHROW(k::compress_launch(nullptr, 0, nullptr, 0, nullptr, cp, nullptr, nullptr, nullptr, nullptr, nullptr));
  for (int world : {0, -3, k::kMaxDecodeWorld + 1})
    CHECK_THROWS_AS(k::decode_launch(&layer, 1, &chunk, 1, &u, world, 1, k::DecodeMode::kApply, nullptr), Error);
  CHECK_THROWS_AS(k::decode_launch(&layer, 1, &chunk, 1, &u, 2, -1, k::DecodeMode::kApply, nullptr), Error);
  CHECK_THROWS_AS(k::decode_launch(&layer, 1, &chunk, 1, nullptr, 2, 1, k::DecodeMode::kVote, nullptr), Error);
  CHECK_THROWS_AS(k::error_from_state_launch(&layer, 1, &chunk, 1, nullptr, nullptr), Error);
  CHECK_THROWS_AS(k::sgdm_update_launch(&layer, 1, &chunk, 1, &f, 0, 0.1f, 0.0f, 0.9f, nullptr), Error);
  CHECK_THROWS_AS(k::gather_u32_launch(&u, nullptr, &u, nullptr, -1, nullptr), Error);
  CHECK_THROWS_AS(k::nonfinite_count_launch(&f, -1, &u, nullptr), Error);
  CHECK_THROWS_AS(k::copy_launch(&f, &f, -1, nullptr), Error);
}

TEST_CASE("compress_launch matches codec::compress_layer: words, state, momentum bit for bit, scales to rounding",
          "[gpu]") {
  SKIP_WITHOUT_GPU();
  for (const NamedTable& nt : compress_tables()) {
    const Layout table(nt.sizes);
    const int64_t N = table.elem.back(), L = table.layers();
    const std::vector<k::DeviceLayer> layers = device_layers(table, nullptr, nullptr, nullptr, nullptr);
    // Inputs drawn once per table; reused by every variant.
    std::mt19937 rng(1234u);
    CompressInputs drawn;
    drawn.param.resize(N);
    drawn.momentum.resize(N);
    drawn.state.resize(N);
    fill_random(drawn.param, rng, 1.0f);
    fill_random(drawn.momentum, rng, 0.1f);
    fill_random(drawn.state, rng, 0.01f);
    std::vector<std::vector<float>> grads(3, std::vector<float>(N));
    for (auto& g : grads) fill_random(g, rng, 1.0f);

    // Every combination of weight decay, momentum, EF state, and mean-|p| or fixed scale.
    for (int combo = 0; combo < 16; ++combo) {
      const bool wd = combo & 1, mom = combo & 2, ef = combo & 4, fixed = combo & 8;
      INFO(nt.name << ": weight decay " << wd << ", momentum " << mom << ", EF " << ef << ", fixed scale " << fixed);
      codec::CompressParams cp;
      cp.lr = 0.1f;
      cp.weight_decay = wd ? 5e-4f : 0.0f;
      cp.momentum = 0.9f;
      cp.scale_mode = fixed ? codec::ScaleMode::kFixed : codec::ScaleMode::kMeanAbs;
      cp.fixed_scale = cp.lr;
      CompressInputs in;
      if (wd) in.param = drawn.param;
      if (mom) in.momentum = drawn.momentum;
      if (ef) in.state = drawn.state;
      for (int64_t l = 0; l < L; ++l) in.prev.push_back(0.005f + 0.001f * static_cast<float>(l % 7));
      for (int step = 0; step < 3; ++step) {
        INFO("step " << step);
        in.grad = grads[step];
        const CompressResult gpu = gpu_compress(layers, table.message_words(), in, cp);
        const std::vector<uint32_t> cpu_msg = cpu_compress(table, in, cp);  // updates in.momentum, in.state
        require_bit_exact("message words", words_of(table, gpu.block), words_of(table, cpu_msg));
        require_bit_exact("momentum", gpu.momentum, in.momentum);
        require_bit_exact("EF state", gpu.state, in.state);
        require_scales(table, gpu.block, gpu.prev, cpu_msg, fixed);
        REQUIRE(gpu.counters == std::vector<uint32_t>(static_cast<std::size_t>(L), 0u));
        in.prev = gpu.prev;  // the CPU's next step starts from the GPU's scale
      }
    }
  }
}

TEST_CASE("compress_launch scales are bit-exact when every partial sum is exact", "[gpu]") {
  SKIP_WITHOUT_GPU();
  // Multiples of 1/16 up to 8 in magnitude, lr and s_prev powers of two: every p is a
  // multiple of 1/64 below 2^5, so every L1 partial sum is exact in double and the
  // reduction order cannot matter.
  const Layout table({kMultiChunk, 33, 0, 10007});
  std::mt19937 rng(5u);
  std::uniform_int_distribution<int> sixteenths(-128, 128);
  CompressInputs in;
  for (int64_t i = 0; i < table.elem.back(); ++i) {
    in.grad.push_back(static_cast<float>(sixteenths(rng)) / 16.0f);
    in.state.push_back(static_cast<float>(sixteenths(rng)) / 16.0f);
  }
  in.prev.assign(static_cast<std::size_t>(table.layers()), 0.25f);
  codec::CompressParams cp;
  cp.lr = 0.5f;
  const CompressResult gpu =
      gpu_compress(device_layers(table, nullptr, nullptr, nullptr, nullptr), table.message_words(), in, cp);
  const std::vector<uint32_t> cpu_msg = cpu_compress(table, in, cp);
  require_bit_exact("whole message, scales included", gpu.block, cpu_msg);
  require_bit_exact("EF state", gpu.state, in.state);
  require_scales(table, gpu.block, gpu.prev, cpu_msg, /*exact=*/true);
}

TEST_CASE("compress_launch: a NaN or Inf in p makes the layer's scale non-finite, as the CPU codec", "[gpu]") {
  SKIP_WITHOUT_GPU();
  const Layout table({kMultiChunk, 100, 100, 33});
  std::mt19937 rng(77u);
  CompressInputs drawn;
  drawn.grad.resize(table.elem.back());
  fill_random(drawn.grad, rng, 1.0f);
  drawn.grad[table.elem[0] + 200000] = std::numeric_limits<float>::quiet_NaN();  // one chunk of a large layer
  drawn.grad[table.elem[1] + 7] = std::numeric_limits<float>::infinity();
  drawn.grad[table.elem[2] + 99] = -std::numeric_limits<float>::infinity();
  drawn.state.assign(drawn.grad.size(), 0.0f);
  drawn.prev.assign(static_cast<std::size_t>(table.layers()), 0.0f);
  for (bool fixed : {false, true}) {
    INFO("fixed scale " << fixed);
    codec::CompressParams cp;
    cp.lr = 0.1f;
    cp.scale_mode = fixed ? codec::ScaleMode::kFixed : codec::ScaleMode::kMeanAbs;
    cp.fixed_scale = 0.1f;
    CompressInputs in = drawn;
    const CompressResult gpu =
        gpu_compress(device_layers(table, nullptr, nullptr, nullptr, nullptr), table.message_words(), in, cp);
    const std::vector<uint32_t> cpu_msg = cpu_compress(table, in, cp);
    require_bit_exact("message words", words_of(table, gpu.block), words_of(table, cpu_msg));
    require_bit_exact("EF state", gpu.state, in.state, /*nan_equal=*/true);
    const auto scale = [&](const std::vector<uint32_t>& m, int64_t l) { return bits_to_float(m[table.scale(l)]); };
    CHECK(std::isnan(scale(gpu.block, 0)));
    CHECK(std::isfinite(scale(gpu.block, 3)));
    if (fixed) {
      for (int64_t l = 0; l < 3; ++l)  // the CPU's quiet NaN, bit for bit
        CHECK(gpu.block[table.scale(l)] == cpu_msg[table.scale(l)]);
    } else {
      CHECK(scale(gpu.block, 1) == std::numeric_limits<float>::infinity());
      CHECK(scale(gpu.block, 2) == std::numeric_limits<float>::infinity());  // |p| sums to +Inf
    }
    require_scales(table, gpu.block, gpu.prev, cpu_msg, fixed);
  }
}

TEST_CASE("compress_launch writes exactly its words and scales, wherever the layout puts them", "[gpu]") {
  SKIP_WITHOUT_GPU();
  // Layers in a block of their own layout: words in reverse layer order with a gap of
  // 3 words after each, scales first and in reverse order (as the two-phase server's
  // segments may be); every other word must stay as it was. Two launches: the second
  // finds the arrival counters as the first left them.
  const Layout flat({33, 0, kMultiChunk, 64, 1});
  const int64_t L = flat.layers();
  std::vector<k::DeviceLayer> layers = device_layers(flat, nullptr, nullptr, nullptr, nullptr);
  int64_t next = L;
  for (int64_t l = L - 1; l >= 0; --l) {
    layers[l].word_offset = next;
    layers[l].scale_index = L - 1 - l;
    next += words_for(flat.sizes[l]) + 3;
  }
  const int64_t block_words = next;
  std::mt19937 rng(3u);
  CompressInputs in;
  in.grad.resize(flat.elem.back());
  fill_random(in.grad, rng, 1.0f);
  in.prev.assign(static_cast<std::size_t>(L), 0.0f);
  codec::CompressParams cp;
  cp.lr = 0.25f;
  const CompressResult gpu = gpu_compress(layers, block_words, in, cp, /*launches=*/2);
  const std::vector<uint32_t> cpu_msg = cpu_compress(flat, in, cp);
  std::vector<uint32_t> want(static_cast<std::size_t>(block_words), 0xdeadbeefu);
  for (int64_t l = 0; l < L; ++l) {
    std::copy(cpu_msg.begin() + flat.word[l], cpu_msg.begin() + flat.word[l + 1], want.begin() + layers[l].word_offset);
    const auto s = static_cast<std::size_t>(layers[l].scale_index);
    INFO("layer " << l);
    REQUIRE(within_one_ulp(bits_to_float(gpu.block[s]), bits_to_float(cpu_msg[flat.scale(l)])));
    want[s] = gpu.block[s];  // scales to float rounding; every other word exactly
  }
  require_bit_exact("block", gpu.block, want);
  REQUIRE(gpu.counters == std::vector<uint32_t>(static_cast<std::size_t>(L), 0u));
}

#if defined(EFSIGN_CUDA_EMULATION)
TEST_CASE("compress_launch gives the same bytes whichever block of a layer finishes last", "[gpu][emu]") {
  // The emulation runs a grid's blocks in the order asked for, so each order makes a
  // different block the last of its layer (the one that sums the partials).
  const Layout table({kMultiChunk, 10007, 33});
  std::mt19937 rng(11u);
  CompressInputs in;
  in.grad.resize(table.elem.back());
  in.state.resize(table.elem.back());
  fill_random(in.grad, rng, 1.0f);
  fill_random(in.state, rng, 0.01f);
  in.prev.assign(static_cast<std::size_t>(table.layers()), 0.003f);
  codec::CompressParams cp;
  cp.lr = 0.1f;
  using efsign::cuda_emu::Order;
  const efsign::cuda_emu::Schedule orders[] = {{Order::kForward, Order::kForward, 0},
                                               {Order::kReverse, Order::kReverse, 0},
                                               {Order::kShuffled, Order::kShuffled, 1},
                                               {Order::kShuffled, Order::kForward, 2}};
  const std::vector<k::DeviceLayer> layers = device_layers(table, nullptr, nullptr, nullptr, nullptr);
  std::vector<CompressResult> results;
  for (const efsign::cuda_emu::Schedule& order : orders) {
    efsign::cuda_emu::set_schedule(order);
    results.push_back(gpu_compress(layers, table.message_words(), in, cp));
    efsign::cuda_emu::set_schedule({});
  }
  for (std::size_t i = 1; i < results.size(); ++i) {
    INFO("schedule " << i << " against schedule 0");
    require_bit_exact("message, scales included", results[i].block, results[0].block);
    require_bit_exact("EF state", results[i].state, results[0].state);
  }
}
#endif

namespace {

// `world` messages from the CPU codec for the layers of `table`, one per rank, from
// random gradients and a per-rank lr; some scales are replaced by a subnormal.
std::vector<uint32_t> cpu_messages(const Layout& table, int world, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t mw = table.message_words(), L = table.layers();
  std::vector<uint32_t> messages(static_cast<std::size_t>(world * mw));
  std::vector<float> grad(table.elem.back());
  for (int w = 0; w < world; ++w) {
    fill_random(grad, rng, 1.0f);
    for (int64_t l = 0; l < L; ++l) {
      codec::LayerBuffers b;
      b.grad = Span<const float>(grad.data() + table.elem[l], table.sizes[l]);
      b.words = Span<uint32_t>(messages.data() + w * mw + table.word[l], (table.word[l + 1] - table.word[l]));
      codec::CompressParams cp;
      cp.lr = 0.01f * static_cast<float>(w + 1);
      float scale = cpu_compress_layer(b, cp);
      if ((w + l) % 9 == 4) scale = 3.0e-39f;  // a subnormal scale
      messages[static_cast<std::size_t>(w * mw + table.scale(l))] = float_to_bits(scale);
    }
  }
  return messages;
}

const char* mode_name(k::DecodeMode mode) {
  switch (mode) {
    case k::DecodeMode::kApply: return "kApply";
    case k::DecodeMode::kAdd: return "kAdd";
    case k::DecodeMode::kVote: return "kVote";
  }
  return "?";
}

// The CPU twin of decode_launch for one layer's elements.
void cpu_decode(k::DecodeMode mode, const std::vector<uint32_t>& blocks, int world, int64_t stride,
                int64_t word_offset, int64_t scale_index, const float* addend, float* param, int64_t n) {
  const Span<const uint32_t> b(blocks);
  switch (mode) {
    case k::DecodeMode::kApply:
      codec::decode_blocks(b, world, stride, word_offset, scale_index, Span<float>(param, n), true, Isa::kPortable);
      break;
    case k::DecodeMode::kAdd:
      codec::decode_add(b, world, stride, word_offset, scale_index, Span<const float>(addend, n),
                        Span<float>(param, n), Isa::kPortable);
      break;
    case k::DecodeMode::kVote:
      codec::vote_apply(b, world, stride, word_offset, scale_index, Span<float>(param, n), Isa::kPortable);
      break;
  }
}

// Runs decode_launch over `layers` (layer l's elements at param/addend + elem_offset)
// and the CPU twin over the same inputs; requires the same bytes (NaN matching NaN).
void require_decode_matches(k::DecodeMode mode, const std::vector<k::DeviceLayer>& host_layers,
                            const std::vector<int64_t>& sizes, const std::vector<uint32_t>& blocks, int world,
                            int64_t stride, uint32_t seed) {
  const int64_t N = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  std::mt19937 rng(seed);
  std::vector<float> param(N), addend(N);
  fill_random(param, rng, 1.0f);
  fill_random(addend, rng, 0.01f);
  DeviceBuffer<float> d_param(param), d_addend(addend);
  DeviceBuffer<uint32_t> d_blocks(blocks);
  std::vector<k::DeviceLayer> layers = host_layers;
  for (k::DeviceLayer& l : layers) {
    l.param = d_param.get() + l.elem_offset;
    l.grad = d_addend.get() + l.elem_offset;
  }
  const DeviceBuffer<k::DeviceLayer> d_layers(layers);
  const DevicePlan plan(sizes);
  k::decode_launch(d_layers.get(), static_cast<int>(layers.size()), plan.chunks.get(), plan.num_chunks(),
                   d_blocks.get(), world, stride, mode, nullptr);
  EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
  for (const k::DeviceLayer& l : host_layers)
    cpu_decode(mode, blocks, world, stride, l.word_offset, l.scale_index, addend.data() + l.elem_offset,
               param.data() + l.elem_offset, l.n);
  require_bit_exact("parameters (kAdd: the output)", d_param.download(), param, /*nan_equal=*/true);
  require_bit_exact("addend, untouched", d_addend.download(), addend);
}

}  // namespace

TEST_CASE("decode_launch matches codec::decode_blocks, decode_add and vote_apply bit for bit, W = 1..13", "[gpu]") {
  SKIP_WITHOUT_GPU();
  const std::vector<int64_t> sizes = decode_sizes();
  const Layout table(sizes);
  const std::vector<k::DeviceLayer> layers = device_layers(table, nullptr, nullptr, nullptr, nullptr);
  // 9 and 13: two rank groups per load (Note [kernel memory pipeline]).
  for (int world : {1, 2, 3, 4, 8, 9, 13}) {
    const std::vector<uint32_t> messages = cpu_messages(table, world, 99u + world);
    for (k::DecodeMode mode : {k::DecodeMode::kApply, k::DecodeMode::kAdd, k::DecodeMode::kVote}) {
      INFO("world " << world << ", mode " << mode_name(mode));
      require_decode_matches(mode, layers, sizes, messages, world, table.message_words(), 7u * world);
    }
  }
}

TEST_CASE("decode_launch reads blocks of any stride, word offset and scale position", "[gpu]") {
  SKIP_WITHOUT_GPU();
  // The two-phase layouts: blocks of an all-to-all receive buffer (scales first, words
  // of the segments in another order, padding), random bits in every word including
  // the tails (decode must ignore bits past a layer's end).
  const std::vector<int64_t> sizes{33, kMultiChunk, 1, 0, 64};
  const int64_t L = static_cast<int64_t>(sizes.size());
  const Layout flat(sizes);
  std::vector<k::DeviceLayer> layers = device_layers(flat, nullptr, nullptr, nullptr, nullptr);
  int64_t next = L + 2;
  for (int64_t l = L - 1; l >= 0; --l) {
    layers[l].word_offset = next;
    layers[l].scale_index = (l * 3) % L;  // a permutation of 0..L-1 (L = 5)
    next += words_for(sizes[l]) + 1;
  }
  const int64_t stride = next + 5;
  for (int world : {1, 3, 8}) {
    std::mt19937 rng(41u + world);
    std::vector<uint32_t> blocks(static_cast<std::size_t>(world * stride));
    for (uint32_t& w : blocks) w = static_cast<uint32_t>(rng());
    std::uniform_real_distribution<float> scale(0.0f, 0.1f);
    for (int w = 0; w < world; ++w)
      for (int64_t l = 0; l < L; ++l) blocks[w * stride + layers[l].scale_index] = float_to_bits(scale(rng));
    for (k::DecodeMode mode : {k::DecodeMode::kApply, k::DecodeMode::kAdd, k::DecodeMode::kVote}) {
      INFO("world " << world << ", mode " << mode_name(mode));
      require_decode_matches(mode, layers, sizes, blocks, world, stride, 13u * world);
    }
  }
}

TEST_CASE("decode_launch: NaN, Inf and zero scales decode as on the CPU", "[gpu]") {
  SKIP_WITHOUT_GPU();
  const std::vector<int64_t> sizes{100, 33, 10007, 64};
  const Layout table(sizes);
  const std::vector<k::DeviceLayer> layers = device_layers(table, nullptr, nullptr, nullptr, nullptr);
  for (int world : {1, 2, 3}) {
    std::vector<uint32_t> messages = cpu_messages(table, world, 5u + world);
    const int64_t mw = table.message_words(), so = table.word.back();
    messages[so + 0] = float_to_bits(std::numeric_limits<float>::quiet_NaN());
    messages[so + 1] = float_to_bits(std::numeric_limits<float>::infinity());
    messages[(world - 1) * mw + so + 2] = float_to_bits(-std::numeric_limits<float>::infinity());
    messages[(world - 1) * mw + so + 3] = float_to_bits(0.0f);
    for (k::DecodeMode mode : {k::DecodeMode::kApply, k::DecodeMode::kAdd, k::DecodeMode::kVote}) {
      INFO("world " << world << ", mode " << mode_name(mode));
      require_decode_matches(mode, layers, sizes, messages, world, mw, 3u * world);
    }
  }
}

TEST_CASE("error_from_state_launch matches codec::error_from_state bit for bit", "[gpu]") {
  SKIP_WITHOUT_GPU();
  const std::vector<int64_t> sizes{1, 0, 33, 10007, kMultiChunk};
  const Layout table(sizes);
  const int64_t N = table.elem.back(), L = table.layers();
  std::mt19937 rng(21u);
  std::vector<float> p(N);
  fill_random(p, rng, 0.1f);
  // Scales as a message's scale words (layer l at scale_offset + l); one a subnormal.
  std::vector<uint32_t> words(static_cast<std::size_t>(table.message_words()), 0u);
  for (int64_t l = 0; l < L; ++l)
    words[table.scale(l)] = float_to_bits(l == 2 ? 3.0e-39f : 0.01f * static_cast<float>(l + 1));
  DeviceBuffer<float> d_p(p), d_e(N);
  DeviceBuffer<uint32_t> d_words(words);
  const DeviceBuffer<k::DeviceLayer> d_layers(device_layers(table, d_p.get(), d_e.get(), nullptr, nullptr));
  const DevicePlan plan(sizes);
  k::error_from_state_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(), d_words.get(),
                             nullptr);
  EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> e(N);
  for (int64_t l = 0; l < L; ++l)
    codec::error_from_state(Span<const float>(p.data() + table.elem[l], table.sizes[l]),
                            bits_to_float(words[table.scale(l)]),
                            Span<float>(e.data() + table.elem[l], table.sizes[l]));
  require_bit_exact("error", d_e.download(), e);
}

TEST_CASE("gather_u32_launch moves words from one index to another", "[gpu]") {
  SKIP_WITHOUT_GPU();
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{10007}}) {
    INFO(n << " words");
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::vector<uint32_t> src(static_cast<std::size_t>(2 * n + 3));
    for (uint32_t& w : src) w = static_cast<uint32_t>(rng());
    // Sources anywhere (repeats allowed); destinations a permutation of a larger array.
    std::vector<int64_t> from(static_cast<std::size_t>(n)), to(static_cast<std::size_t>(2 * n));
    for (int64_t& i : from) i = static_cast<int64_t>(rng() % src.size());
    std::iota(to.begin(), to.end(), 0);
    std::shuffle(to.begin(), to.end(), rng);
    to.resize(static_cast<std::size_t>(n));
    std::vector<uint32_t> want(static_cast<std::size_t>(2 * n), 0xdeadbeefu);
    DeviceBuffer<uint32_t> d_src(src), d_dst(want);
    DeviceBuffer<int64_t> d_from(from), d_to(to);
    k::gather_u32_launch(d_src.get(), d_from.get(), d_dst.get(), d_to.get(), n, nullptr);
    EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
    for (int64_t i = 0; i < n; ++i) want[to[i]] = src[from[i]];
    require_bit_exact("moved words", d_dst.download(), want);
  }
}

TEST_CASE("nonfinite_count_launch finds one NaN or Inf anywhere", "[gpu]") {
  SKIP_WITHOUT_GPU();
  DeviceBuffer<uint32_t> d_count(std::vector<uint32_t>{12345u});
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{257}, int64_t{300007}}) {
    std::vector<float> data(static_cast<std::size_t>(n), 1.5f);
    DeviceBuffer<float> d_data(data);
    k::nonfinite_count_launch(d_data.get(), n, d_count.get(), nullptr);
    EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
    INFO(n << " finite values");
    CHECK(d_count.download()[0] == 0u);
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      for (int64_t at : {int64_t{0}, n - 1, n / 2}) {
        if (n == 0) continue;
        std::vector<float> d = data;
        d[at] = bad;
        d_data.upload(d);
        k::nonfinite_count_launch(d_data.get(), n, d_count.get(), nullptr);
        EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
        INFO(bad << " at " << at);
        CHECK(d_count.download()[0] != 0u);
      }
    }
  }
}

TEST_CASE("gather_grads_launch and sgdm_update_launch match the CPU sgdm loop bit for bit", "[gpu]") {
  SKIP_WITHOUT_GPU();
  const std::vector<int64_t> sizes =
      kEmulated ? std::vector<int64_t>{1, 31, 32, 33, 10007, kMultiChunk, 8192, 64, 0}
                : std::vector<int64_t>{1, 31, 32, 33, 4097, 1000003, 8192, 64, 64, 0};
  const Layout table(sizes);
  const int64_t N = table.elem.back(), L = table.layers();
  const DevicePlan plan(sizes);
  std::mt19937 rng(7u);
  // The flat buffer: N gradient elements, then one presence float per layer.
  std::vector<float> grad(N), param(N), momentum(N), flat(N + L);
  fill_random(grad, rng, 1.0f);
  fill_random(param, rng, 1.0f);
  fill_random(momentum, rng, 0.1f);
  DeviceBuffer<float> d_grad(grad), d_param(param), d_mom(momentum), d_flat(N + L);
  std::vector<k::DeviceLayer> layers = device_layers(table, d_grad.get(), d_param.get(), d_mom.get(), nullptr);
  for (int64_t l = 0; l < L; ++l) layers[l].scale_index = N + l;
  const int64_t absent = 4;  // this layer has no gradient: zeros, presence 0
  layers[absent].grad = nullptr;
  const DeviceBuffer<k::DeviceLayer> d_layers(layers);

  d_flat.upload(std::vector<float>(N + L, std::numeric_limits<float>::quiet_NaN()));
  k::gather_grads_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(), d_flat.get(),
                         nullptr);
  EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> want(grad);
  std::fill(want.begin() + table.elem[absent], want.begin() + table.elem[absent + 1], 0.0f);
  for (int64_t l = 0; l < L; ++l) want.push_back(l == absent ? 0.0f : 1.0f);
  require_bit_exact("gathered gradients and presence", d_flat.download(), want);

  // An allreduce result of 3 ranks stands in for the sum; layer `absent` had a
  // gradient on no rank (presence 0): it must not move.
  const int world = 3;
  const float lr = 0.1f, wd = 5e-4f, beta = 0.9f;
  fill_random(flat, rng, 3.0f);
  for (int64_t l = 0; l < L; ++l) flat[N + l] = l == absent ? 0.0f : 2.0f;
  d_flat.upload(flat);
  for (int step = 0; step < 2; ++step) {
    INFO("step " << step);
    k::sgdm_update_launch(d_layers.get(), static_cast<int>(L), plan.chunks.get(), plan.num_chunks(), d_flat.get(),
                          world, lr, wd, beta, nullptr);
    EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
    const float wf = static_cast<float>(world);
    for (int64_t i = 0; i < N; ++i) {  // the host codec's loop, with -ffp-contract=off
      if (i >= table.elem[absent] && i < table.elem[absent + 1]) continue;
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
  const std::vector<int64_t> ns = kEmulated ? std::vector<int64_t>{0, 1, 3, 4, 5, 1023, 10007}
                                            : std::vector<int64_t>{0, 1, 3, 4, 5, 1023, 1000003};
  for (int64_t n : ns) {
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

#if defined(EFSIGN_CUDA_EMULATION)
TEST_CASE("every launcher launches on the stream it is given, never on the default stream", "[gpu][emu]") {
  cudaStream_t stream = nullptr;
  EFSIGN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const std::vector<int64_t> sizes{33, 0, 10007};
  const Layout table(sizes);
  const int64_t N = table.elem.back(), L = table.layers();
  const DevicePlan plan(sizes);
  std::vector<float> ones(N, 1.0f);
  DeviceBuffer<float> a(ones), b(ones), c(ones), flat(N);
  DeviceBuffer<uint32_t> msg(std::vector<uint32_t>(table.message_words(), 0u));
  DeviceBuffer<int64_t> index(std::vector<int64_t>(4, 0)), to(std::vector<int64_t>{0, 1, 2, 3});
  DeviceBuffer<uint32_t> gathered(4), count(1);
  CompressWorkspace ws(L, plan.num_chunks());
  const DeviceBuffer<k::DeviceLayer> d_layers(device_layers(table, a.get(), b.get(), c.get(), flat.get()));
  const int Li = static_cast<int>(L), nc = plan.num_chunks();
  codec::CompressParams cp;
  cp.lr = 0.1f;
  cp.weight_decay = 0.5f;
  cp.momentum = 0.5f;
  efsign::cuda_emu::clear_launches();
  k::compress_launch(d_layers.get(), Li, plan.chunks.get(), nc, plan.first.get(), cp, ws.prev_scales.get(),
                     ws.partials.get(), ws.counters.get(), msg.get(), stream);
  for (k::DecodeMode mode : {k::DecodeMode::kApply, k::DecodeMode::kAdd, k::DecodeMode::kVote})
    k::decode_launch(d_layers.get(), Li, plan.chunks.get(), nc, msg.get(), 1, table.message_words(), mode, stream);
  k::error_from_state_launch(d_layers.get(), Li, plan.chunks.get(), nc, msg.get(), stream);
  k::gather_u32_launch(msg.get(), index.get(), gathered.get(), to.get(), 4, stream);
  k::nonfinite_count_launch(a.get(), N, count.get(), stream);
  k::gather_grads_launch(d_layers.get(), Li, plan.chunks.get(), nc, flat.get(), stream);
  k::sgdm_update_launch(d_layers.get(), Li, plan.chunks.get(), nc, flat.get(), 2, 0.1f, 0.0f, 0.9f, stream);
  k::copy_launch(a.get(), b.get(), N, stream);
  k::copy_launch(a.get() + 1, b.get(), N - 1, stream);
  EFSIGN_CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::vector<efsign::cuda_emu::LaunchRecord> launches = efsign::cuda_emu::launches();
  // compress, 3 decodes, error_from_state, 2 gathers, the non-finite count, sgdm, copy
  // (float4 + none left), copy (unaligned: float only).
  REQUIRE(launches.size() == 11u);
  for (const auto& r : launches) {
    INFO(r.kernel);
    CHECK(r.stream == stream);
  }
  EFSIGN_CUDA_CHECK(cudaStreamDestroy(stream));
}
#endif
