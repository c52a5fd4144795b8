// efsign-bench codec: the CPU codec on a real model's layer table against a memcpy of
// the same gradient, measured in the same run (see efsign_bench.cpp for the tools).
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <array>
#include <cstring>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "bench_common.h"
#include "efsign/layer_table.h"
#include "efsign/metrics.h"
#include "efsign/sign_codec.h"
#include "model_tables.h"

namespace efsign::bench {
namespace {

// dst = src through ordinary (write-allocate) stores: SSE2 intrinsics, so the
// compiler cannot turn the loop back into a memcpy call.
void copy_with_cached_stores(const float* src, float* dst, int64_t n) {
#if defined(__SSE2__)
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_loadu_ps(src + i));
  for (; i < n; ++i) dst[i] = src[i];
#else
  for (int64_t i = 0; i < n; ++i) reinterpret_cast<volatile float*>(dst)[i] = src[i];
#endif
}

}  // namespace

int run_codec(int argc, char** argv, HostCommunicator& comm) {
  cxxopts::Options spec("efsign-bench codec", "CPU codec throughput vs memcpy, one process");
  spec.add_options()("model", "resnet18 (CIFAR-100) | vgg19 (CIFAR-10)",
                     cxxopts::value<std::string>()->default_value("resnet18"))(
      "world", "messages to decode", cxxopts::value<int>()->default_value("2"))(
      "iters", "timed iterations", cxxopts::value<int>()->default_value("20"))(
      "warmup", "untimed iterations", cxxopts::value<int>()->default_value("3"))(
      "json", "write records here", cxxopts::value<std::string>()->default_value(""))("h,help", "help");
  auto r = spec.parse(argc, argv);
  if (r.count("help")) {
    if (comm.rank() == 0) fmt::print("{}", spec.help());
    return 0;
  }
  const std::string model = r["model"].as<std::string>();
  const int W = r["world"].as<int>(), iters = r["iters"].as<int>(), warmup = r["warmup"].as<int>();
  if (model != "resnet18" && model != "vgg19") throw UsageError("--model must be resnet18 or vgg19");
  if (W < 1 || iters < 1 || warmup < 0) throw UsageError("need --world >= 1, --iters >= 1, --warmup >= 0");
  if (comm.rank() != 0) return 0;  // a single-process measurement
  const LayerTable table(model == "resnet18" ? kernels::resnet18_cifar_sizes(100) : kernels::vgg19_bn_cifar_sizes(10));
  const int64_t d = table.total_elements();
  // Five gradient-sized float arrays and `world` messages.
  const std::string why = memory_shortfall(
      20.0 * static_cast<double>(d) + static_cast<double>(W) * static_cast<double>(table.message_bytes()),
      fmt::format("--world {}: {} messages of {} ({} parameters, {} bytes each) with 5 gradient-sized arrays", W, W,
                  model, d, table.message_bytes()));
  if (!why.empty()) throw UsageError("codec: " + why);
  // 64-byte aligned, as LibTorch allocates the tensors the trainer hands the codec.
  AlignedFloats grad(d), state(d), param(d), out(d), dst(d);
  fill_grad(grad.span(), 0);
  std::vector<uint32_t> msgs(W * table.message_words());
  std::vector<float> prev(table.num_layers(), 0.0f);
  auto memcpy_grad = [&] { std::memcpy(dst.data(), grad.data(), 4 * d); };
  // This machine's memory bandwidth drifts by tens of percent within seconds (shared
  // host), so every operation is timed in pairs with the memcpy it is compared to,
  // alternating which goes first, and the ratio is the median of the per-pair ratios.
  auto paired = [&](auto&& fn) {
    for (int i = 0; i < warmup; ++i) {
      memcpy_grad();
      fn();
    }
    std::vector<double> op_ms, copy_ms, ratio;
    auto ms_of = [](auto&& f) {
      const auto t0 = Clock::now();
      f();
      return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    };
    for (int i = 0; i < iters; ++i) {
      double c, o;
      if (i % 2 == 0) {
        c = ms_of(memcpy_grad);
        o = ms_of(fn);
      } else {
        o = ms_of(fn);
        c = ms_of(memcpy_grad);
      }
      op_ms.push_back(o);
      copy_ms.push_back(c);
      ratio.push_back(o / c);
    }
    return std::array<Timing, 3>{summarize(op_ms), summarize(copy_ms), summarize(ratio)};
  };
  JsonFile json(r["json"].as<std::string>());
  fmt::print("# efsign-bench codec: {} ({} layers, {} parameters, {:.1f} MB of fp32 gradient), W = {} messages,\n"
             "# {} iterations; each operation timed in pairs with a memcpy of the gradient\n",
             model, table.num_layers(), d, 4e-6 * d, W, iters);
  fmt::print("{:>9} {:>30} {:>9} {:>9} {:>7} {:>10} {:>16}\n", "path", "operation", "op ms", "copy ms", "GB/s*",
             "x memcpy", "(min..max)");
  // glibc's memcpy switches to non-temporal stores above a fraction of the L3 size,
  // so it moves 8 B per float where a loop that writes through the cache moves 12
  // (read-for-ownership). A copy with ordinary stores shows which regime this is.
  struct Row {
    std::string path, op;
    std::array<Timing, 3> t;
    double bytes;
  };
  std::vector<Row> rows;
  rows.push_back({"-", "copy, ordinary stores", paired([&] { copy_with_cached_stores(grad.data(), dst.data(), d); }),
                  8.0 * d});
  std::vector<codec::Isa> isas{codec::Isa::kPortable};
  for (codec::Isa isa : {codec::Isa::kAvx2, codec::Isa::kAvx512})
    if (codec::isa_available(isa)) isas.push_back(isa);
  for (codec::Isa isa : isas) {
    auto compress = [&] {
      codec::CompressParams cp;
      cp.lr = 0.01f;
      for (int64_t l = 0; l < table.num_layers(); ++l) {
        const int64_t off = table.elem_offset(l), n = table.size(l);
        codec::LayerBuffers b;
        b.grad = Span<const float>(grad.data() + off, n);
        b.state = Span<float>(state.data() + off, n);
        b.prev_scale = prev[l];
        b.words = Span<uint32_t>(msgs.data() + table.word_offset(l), table.words(l));
        prev[l] = codec::compress_layer(b, cp, isa);
        std::memcpy(&msgs[table.scale_offset_words() + l], &prev[l], 4);
      }
      for (int w = 1; w < W; ++w)  // the other ranks' messages: copies (same cost to decode)
        std::memcpy(msgs.data() + w * table.message_words(), msgs.data(), table.message_bytes());
    };
    auto decode = [&] {  // out = (1/W) sum_w s_w sign_w
      for (int64_t l = 0; l < table.num_layers(); ++l)
        codec::decode_average(Span<const uint32_t>(msgs), W, table, l,
                              Span<float>(out.data() + table.elem_offset(l), table.size(l)), isa);
    };
    auto decode_apply = [&] {  // param -= (1/W) sum_w s_w sign_w: what the CPU trainer runs
      for (int64_t l = 0; l < table.num_layers(); ++l)
        codec::decode_average_apply(Span<const uint32_t>(msgs), W, table, l,
                                    Span<float>(param.data() + table.elem_offset(l), table.size(l)), isa);
    };
    compress();
    const std::string path = codec::isa_name(isa);
    const double msg = d / 8.0;
    rows.push_back({path, "compress (EF)", paired(compress), 12.0 * d + msg});
    rows.push_back({path, "decode-average", paired(decode), 4.0 * d + W * msg});
    rows.push_back({path, "decode-average-apply", paired(decode_apply), 8.0 * d + W * msg});
    rows.push_back({path, "compress + decode-average", paired([&] {
                      compress();
                      decode();
                    }),
                    16.0 * d + (W + 1) * msg});
    rows.push_back({path, "compress + decode-average-apply", paired([&] {
                      compress();
                      decode_apply();
                    }),
                    20.0 * d + (W + 1) * msg});
  }
  for (const Row& row : rows) {
    const Timing& op = row.t[0];
    const Timing& copy = row.t[1];
    const Timing& ratio = row.t[2];
    fmt::print("{:>9} {:>30} {:>9.3f} {:>9.3f} {:>7.1f} {:>9.2f}x {:>7.2f}..{:<5.2f}\n", row.path, row.op, op.median,
               copy.median, row.bytes / (op.median * 1e6), ratio.median, ratio.min, ratio.max);
    json.write(JsonLine()
                   .add("model", model)
                   .add("path", row.path)
                   .add("operation", row.op)
                   .add("elements", d)
                   .add("world", W)
                   .add("time_ms_median", op.median)
                   .add("memcpy_ms_median", copy.median)
                   .add("ratio_to_memcpy", ratio.median)
                   .add("ratio_min", ratio.min)
                   .add("ratio_max", ratio.max)
                   .str());
  }
  // The target a user reads first: the default path's compress + decode against 2x memcpy.
  const std::string best = codec::isa_name(codec::best_isa());
  for (const Row& row : rows)
    if (row.path == best && (row.op == "compress + decode-average" || row.op == "compress + decode-average-apply"))
      fmt::print("# {} {}: {:.2f}x memcpy (target <= 2x: {})\n", best, row.op, row.t[2].median,
                 row.t[2].median <= 2.0 ? "met" : "NOT met");
  fmt::print("# x memcpy: median over the pairs of (operation time / memcpy time), min..max over the pairs.\n"
             "# GB/s*: bytes the operation must move per parameter (compress 12 B: read g and the EF state,\n"
             "# write the state; decode-average 4 B: write the average; -apply 8 B: read and write x; plus\n"
             "# 1/8 B per message) over its time. A memcpy moves 8 B, so at equal bandwidth compress +\n"
             "# decode-average is 2.0x a memcpy and compress + decode-average-apply 2.5x.\n");
  json.close();
  return 0;
}

}  // namespace efsign::bench
