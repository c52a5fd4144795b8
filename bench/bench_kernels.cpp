// efsign-bench-kernels — memory-bandwidth benchmark of the CUDA sign codec.
//
// For each case (ResNet-18/CIFAR-100 and VGG-19-BN/CIFAR-10 layer tables; single layers
// of 1e4 .. 1e9 elements, capped by --max-elements and by free device memory) it times,
// with CUDA events on its own stream (warm-up, then the median of --iters runs), each
// kernel with the bytes it must move per parameter (reads + writes, from the formats;
// caches aside, the least any implementation can move):
//   copy            copy_launch of 1.5 n floats (rounded down to a multiple of 4): reads
//                   6n and writes 6n bytes, 12 B/param — the bandwidth reference.
//   compress        EF state, no weight decay: reads g and c, writes c and the bits:
//                   12 + 1/8 B/param (the target: >= 90% of copy).
//   compress_wd     EF state and weight decay, as the presets run it: also reads x:
//                   16 + 1/8 B/param.
//   decode_apply    W = 2, 4, 8 random messages: reads and writes x, reads W bits:
//                   8 + W/8 B/param (the target: >= 85% of copy).
//   decode_vote     majority vote over the same messages: 8 + W/8 B/param.
//   decode_add      the two-phase server's p = e + average: reads e, writes p: 8 + W/8.
// GB/s = analytic bytes / median time; ratio_to_copy = GB/s / copy GB/s (the same copy
// measurement is the reference for every kernel of a case). Scales are bounded random
// values, so no kernel takes a slow path on NaN or Inf.
// Without a CUDA device it prints "no CUDA device: kernel benchmark skipped", exits 0.
// Built for the GPU (efsign_kernels) and, to test the benchmark itself, against the
// CUDA emulation (efsign-bench-kernels-emu: its times mean nothing).
// Exit codes: 0 ok, 1 a CUDA or other error, 2 bad flags.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "cuda_check.h"
#include "device_buffer.h"
#include "efsign/error.h"
#include "efsign/layer_table.h"
#include "model_tables.h"
#include "sign_kernels.h"

namespace k = efsign::kernels;

namespace {

using k::DeviceBuffer;

// Owns a stream or an event: the subclass's constructor makes it, this destroys it.
template <typename Handle, cudaError_t (*kDestroy)(Handle)>
class Owned {
 public:
  Owned() = default;
  ~Owned() {
    if (h_) kDestroy(h_);
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  Handle get() const { return h_; }

 protected:
  Handle h_ = nullptr;
};

class Event : public Owned<cudaEvent_t, cudaEventDestroy> {
 public:
  Event() { EFSIGN_CUDA_CHECK(cudaEventCreate(&h_)); }
};

class Stream : public Owned<cudaStream_t, cudaStreamDestroy> {
 public:
  Stream() { EFSIGN_CUDA_CHECK(cudaStreamCreateWithFlags(&h_, cudaStreamNonBlocking)); }
};

// Fills count elements of dst with copies of a block of random host values.
template <typename T, typename Gen>
void fill_device(T* dst, int64_t count, Gen gen) {
  std::vector<T> block(std::min<int64_t>(count, int64_t{1} << 20));
  for (auto& v : block) v = gen();
  for (int64_t done = 0; done < count;) {
    const int64_t now = std::min<int64_t>(count - done, static_cast<int64_t>(block.size()));
    EFSIGN_CUDA_CHECK(cudaMemcpy(dst + done, block.data(), now * sizeof(T), cudaMemcpyHostToDevice));
    done += now;
  }
}

// Median time in ms of `iters` runs of fn on `stream` after `warmup` untimed runs.
template <typename Fn>
double median_ms(cudaStream_t stream, int warmup, int iters, Fn fn) {
  for (int i = 0; i < warmup; ++i) fn();
  EFSIGN_CUDA_CHECK(cudaStreamSynchronize(stream));
  Event start, stop;
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    EFSIGN_CUDA_CHECK(cudaEventRecord(start.get(), stream));
    fn();
    EFSIGN_CUDA_CHECK(cudaEventRecord(stop.get(), stream));
    EFSIGN_CUDA_CHECK(cudaEventSynchronize(stop.get()));
    float ms = 0.0f;
    EFSIGN_CUDA_CHECK(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  const std::size_t h = times.size() / 2;
  return times.size() % 2 ? times[h] : 0.5 * (times[h - 1] + times[h]);
}

struct Case {
  std::string name;
  std::vector<int64_t> sizes;
};

struct Record {
  std::string case_name, kernel;
  int64_t elements = 0;
  int world = 0;
  double bytes_per_param = 0, time_ms = 0, gbps = 0, copy_gbps = 0;
};

constexpr int kWorlds[] = {2, 4, 8};
constexpr int kMaxWorld = 8;
// Device memory per parameter: grad, state, param, out (floats) and kMaxWorld bits.
constexpr double kDeviceBytesPerParam = 16.0 + kMaxWorld / 8.0;
// Existing public EF-SignSGD implementations materialise signs, errors and scaled
// updates as full fp32 tensors in separate passes; ~10x our bytes per parameter is an
// ESTIMATE of that traffic, printed for orientation only, never measured here.
constexpr double kPublicImplFactor = 10.0;

std::vector<Record> run_case(const Case& c, int warmup, int iters) {
  const efsign::LayerTable table(c.sizes);
  const int64_t n = table.total_elements(), L = table.num_layers(), mw = table.message_words();
  const k::ChunkPlan plan = k::ChunkPlan::build(c.sizes);
  const int num_chunks = static_cast<int>(plan.chunks.size());
  const Stream stream;

  // grad | state | param | out, back to back; the copy reads the first 1.5 n floats of
  // the pool and writes the next 1.5 n.
  DeviceBuffer<float> pool(4 * n);
  float* grad = pool.get();
  float* state = grad + n;
  float* param = state + n;
  float* out = param + n;
  DeviceBuffer<uint32_t> messages(kMaxWorld * mw);
  DeviceBuffer<float> prev_scales(L);
  DeviceBuffer<double> partials(std::max(1, num_chunks));
  DeviceBuffer<uint32_t> counters(L);
  DeviceBuffer<k::Chunk> chunks(plan.chunks);
  DeviceBuffer<int32_t> first(plan.layer_first_chunk);
  EFSIGN_CUDA_CHECK(cudaMemset(counters.get(), 0, L * sizeof(uint32_t)));

  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  fill_device(pool.get(), 4 * n, [&] { return nd(rng); });
  fill_device(messages.get(), kMaxWorld * mw, [&] { return static_cast<uint32_t>(rng()); });
  std::uniform_real_distribution<float> scale(0.001f, 0.01f);
  for (int w = 0; w < kMaxWorld; ++w) {  // sane scales in every message
    std::vector<float> scales(L);
    for (float& s : scales) s = scale(rng);
    EFSIGN_CUDA_CHECK(cudaMemcpy(messages.get() + w * mw + table.scale_offset_words(), scales.data(),
                                 L * sizeof(float), cudaMemcpyHostToDevice));
    if (w == 0) prev_scales.upload(scales);
  }
  // The compress and in-place decode layers; the two-phase server's (kAdd: p = e + a,
  // e in `state`, p to `out`).
  std::vector<k::DeviceLayer> host(L), host_add(L);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t off = table.elem_offset(l);
    k::DeviceLayer d;
    d.grad = grad + off;
    d.param = param + off;
    d.state = state + off;
    d.n = table.size(l);
    d.word_offset = table.word_offset(l);
    d.scale_index = table.scale_offset_words() + l;
    d.elem_offset = off;
    host[l] = d;
    d.grad = state + off;
    d.param = out + off;
    d.state = nullptr;
    host_add[l] = d;
  }
  const DeviceBuffer<k::DeviceLayer> layers(host), layers_add(host_add);

  const double elements = static_cast<double>(n);
  auto gbps = [&](double bytes_per_param, double ms) { return bytes_per_param * elements / (ms * 1e6); };
  std::vector<Record> records;
  auto time_kernel = [&](const std::string& kernel, int world, double bytes_per_param, double copy_gbps, auto fn) {
    const double ms = median_ms(stream.get(), warmup, iters, fn);
    records.push_back({c.name, kernel, n, world, bytes_per_param, ms, gbps(bytes_per_param, ms), copy_gbps});
  };

  const int64_t copy_n = (3 * n / 2) & ~int64_t{3};  // a multiple of 4: both ends 16-byte aligned (float4 path)
  const double copy_bpp = 8.0 * static_cast<double>(copy_n) / elements;
  const double copy_ms =
      median_ms(stream.get(), warmup, iters, [&] { k::copy_launch(grad, grad + copy_n, copy_n, stream.get()); });
  const double copy_gbps = gbps(copy_bpp, copy_ms);
  records.push_back({c.name, "copy", n, 0, copy_bpp, copy_ms, copy_gbps, copy_gbps});

  for (const bool wd : {false, true}) {
    efsign::codec::CompressParams cp;
    cp.lr = 0.01f;
    cp.weight_decay = wd ? 5e-4f : 0.0f;
    time_kernel(wd ? "compress_wd" : "compress", 1, (wd ? 16.0 : 12.0) + 1.0 / 8.0, copy_gbps, [&] {
      k::compress_launch(layers.get(), static_cast<int>(L), chunks.get(), num_chunks, first.get(), cp,
                         prev_scales.get(), partials.get(), counters.get(), messages.get(), stream.get());
    });
  }
  const struct {
    const char* name;
    k::DecodeMode mode;
    const k::DeviceLayer* layers;
  } decodes[] = {{"decode_apply", k::DecodeMode::kApply, layers.get()},
                 {"decode_vote", k::DecodeMode::kVote, layers.get()},
                 {"decode_add", k::DecodeMode::kAdd, layers_add.get()}};
  for (const auto& d : decodes)
    for (int world : kWorlds)
      time_kernel(d.name, world, 8.0 + world / 8.0, copy_gbps, [&] {
        k::decode_launch(d.layers, static_cast<int>(L), chunks.get(), num_chunks, messages.get(), world, mw, d.mode,
                         stream.get());
      });
  EFSIGN_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  return records;
}

void print_table(const std::vector<Record>& records) {
  fmt::print("{:<20} {:<13} {:>13} {:>5} {:>8} {:>11} {:>9} {:>9} {:>7} {:>14}\n", "case", "kernel", "elements",
             "W", "B/param", "median ms", "GB/s", "copy GB/s", "ratio", "public est B/p");
  for (const Record& r : records) {
    const bool copy = r.kernel == "copy";
    fmt::print("{:<20} {:<13} {:>13} {:>5} {:>8.3f} {:>11.4f} {:>9.1f} {:>9.1f} {:>7.3f} {:>14}\n", r.case_name,
               r.kernel, r.elements, r.world, r.bytes_per_param, r.time_ms, r.gbps, r.copy_gbps, r.gbps / r.copy_gbps,
               copy ? std::string("-") : fmt::format("{:.1f}", kPublicImplFactor * r.bytes_per_param));
  }
  fmt::print("public est B/p: an ESTIMATE (10x our bytes per parameter) for existing public implementations, "
             "not a measurement.\n");
}

void write_json(const std::string& path, const std::vector<Record>& records) {
  std::ofstream f(path);
  if (!f) throw efsign::InputError("cannot write " + path);
  f << "[\n";
  for (std::size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    f << fmt::format(
        "  {{\"case\": \"{}\", \"kernel\": \"{}\", \"elements\": {}, \"world\": {}, \"bytes_per_param\": {:.6f}, "
        "\"time_ms_median\": {:.6f}, \"gbps\": {:.3f}, \"copy_gbps\": {:.3f}, \"ratio_to_copy\": {:.6f}}}{}\n",
        r.case_name, r.kernel, r.elements, r.world, r.bytes_per_param, r.time_ms, r.gbps, r.copy_gbps,
        r.gbps / r.copy_gbps, i + 1 < records.size() ? "," : "");
  }
  f << "]\n";
  if (!f) throw efsign::InputError("error writing " + path);
}

int run(int argc, char** argv) {
  cxxopts::Options opts("efsign-bench-kernels", "Bandwidth of the CUDA sign-codec kernels against a plain copy");
  opts.add_options()("json", "write the records to this JSON file", cxxopts::value<std::string>())(
      "iters", "timed runs per kernel (median reported)", cxxopts::value<int>()->default_value("50"))(
      "warmup", "untimed runs per kernel first", cxxopts::value<int>()->default_value("5"))(
      "max-elements", "skip cases with more parameters than this",
      cxxopts::value<double>()->default_value("1e9"))("h,help", "show this help");
  const auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  const int iters = args["iters"].as<int>(), warmup = args["warmup"].as<int>();
  const double max_elements = args["max-elements"].as<double>();
  if (iters < 1 || warmup < 0 || !(max_elements >= 1)) throw efsign::UsageError("need --iters >= 1, --warmup >= 0, --max-elements >= 1");

  int devices = 0;
  const cudaError_t rc = cudaGetDeviceCount(&devices);
  if (rc != cudaSuccess || devices == 0) {
    std::cout << "no CUDA device: kernel benchmark skipped ("
              << (rc != cudaSuccess ? cudaGetErrorString(rc) : "0 devices") << ")\n";
    return 0;
  }
  cudaDeviceProp prop{};
  EFSIGN_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  fmt::print("device 0: {} ({} SMs, {:.1f} GiB)\n", prop.name, prop.multiProcessorCount,
             static_cast<double>(prop.totalGlobalMem) / (1 << 30));

  std::vector<Case> cases{{"resnet18-cifar100", k::resnet18_cifar_sizes(100)},
                          {"vgg19bn-cifar10", k::vgg19_bn_cifar_sizes(10)}};
  int64_t layer_n = 10000;
  for (int e = 4; e <= 9; ++e, layer_n *= 10) cases.push_back({fmt::format("layer-1e{}", e), {layer_n}});

  std::vector<Record> records;
  for (const Case& c : cases) {
    const int64_t n = std::accumulate(c.sizes.begin(), c.sizes.end(), int64_t{0});
    if (static_cast<double>(n) > max_elements) {
      fmt::print("{}: {} elements > --max-elements, skipped\n", c.name, n);
      continue;
    }
    size_t free_bytes = 0, total_bytes = 0;
    EFSIGN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double need = kDeviceBytesPerParam * n + kMaxWorld * 4.0 * c.sizes.size() + (64 << 20);
    if (need > 0.95 * static_cast<double>(free_bytes)) {
      fmt::print("{}: needs {:.1f} GiB of device memory, {:.1f} GiB free, skipped\n", c.name, need / (1 << 30),
                 static_cast<double>(free_bytes) / (1 << 30));
      continue;
    }
    const auto r = run_case(c, warmup, iters);
    records.insert(records.end(), r.begin(), r.end());
  }
  print_table(records);
  if (args.count("json")) {
    write_json(args["json"].as<std::string>(), records);
    fmt::print("wrote {}\n", args["json"].as<std::string>());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    std::cerr << "efsign-bench-kernels: " << e.what() << "\n";
    return 2;
  } catch (const efsign::UsageError& e) {
    std::cerr << "efsign-bench-kernels: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "efsign-bench-kernels: " << e.what() << "\n";
    return 1;
  }
}
