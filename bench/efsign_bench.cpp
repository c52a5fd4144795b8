// efsign-bench: measurements a user needs to decide whether efsign pays off.
//
//   mpirun -np W efsign-bench comm [-b 1e3] [-e 1e8] [-f 10] [--iters 20] [--warmup 3] [--backend mpi|nccl]
//                                  [--json F]
//     For each gradient size d (one layer): fp32 allreduce of d floats; each compressed
//     exchange end to end (EF compress + exchange + apply: "compressed" = allgather,
//     "two-phase", "vote"; efsign/exchange.h); the allgather of the message alone. Bandwidths as nccl-tests defines them:
//       allreduce: S = 4d bytes,        algbw = S / t, busbw = algbw * 2(W-1)/W
//       allgather: S = W * message,     algbw = S / t, busbw = algbw * (W-1)/W
//       two-phase: S = message,          algbw = S / t, busbw = algbw * 2(W-1)/W
//     (compressed and vote use the allgather's S). Every size is checked once, untimed:
//     allreduce inputs are small integers (exact sums); each compressed result must
//     equal, bit for bit, the update computed locally from every rank's message rebuilt
//     from its seed (for two-phase and vote written out here, not by the library).
//     Wrong elements are counted and printed, never hidden.
//
//   efsign-bench codec [--model resnet18|vgg19] [--world 2] [--iters 20] [--json F]
//     The CPU codec on a real model's layer table, against a memcpy of the same
//     gradient measured in the same run: compress (EF, one pass), decode-average-apply
//     of `world` messages, and both, for every codec path this CPU has.
//
//   efsign-bench loader [--dataset synthetic|cifar10|cifar100] [--data-dir D] [--model resnet18]
//     Images/s of the input pipeline alone (gather, crop+flip, normalise) against
//     images/s of forward+backward of the model on the same batches, one process.
//
//   mpirun -np W efsign-bench step [--model convnet] [--batch-size 64] [--steps 30] [--overlap] [--json F]
//     Per-step time split into forward+backward, compress, communicate, decode+update,
//     and images/s, for each optimizer (ef-signsgd once per exchange), same model and
//     batch, in one run. With --overlap the sign rows exchange buckets during backward
//     and the share of the exchange hidden behind backward is reported.
#include <mpi.h>
#include <torch/torch.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cstdlib>
#include <memory>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "efsign/data.h"
#include "efsign/error.h"
#include "efsign/exchange.h"
#include "efsign/layer_table.h"
#include "efsign/metrics.h"
#include "efsign/models.h"
#include "efsign/mpi_communicator.h"
#include "efsign/optimizer.h"
#include "efsign/sign_codec.h"
#include "model_tables.h"
#if defined(EFSIGN_HAVE_CUDA)
#include "cuda_check.h"
#include "device_buffer.h"
#include "efsign/nccl_communicator.h"
#include "sign_kernels.h"
#endif

using namespace efsign;
using Clock = std::chrono::steady_clock;

namespace {

struct Timing {
  double median = 0, min = 0, max = 0;
};

Timing summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

template <typename Fn>
Timing time_it(HostCommunicator& comm, int warmup, int iters, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    comm.barrier();
    const auto t0 = Clock::now();
    fn();
    // The slowest rank defines the collective's time.
    double t = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    double all = t;
    MPI_Allreduce(&t, &all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    ms.push_back(all);
  }
  return summarize(ms);
}

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

// A 64-byte aligned float array (what LibTorch's CPU allocator gives a tensor).
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n)
      : n_(static_cast<std::size_t>(n)), p_(static_cast<float*>(std::aligned_alloc(64, ((4 * n + 63) / 64) * 64))) {
    if (!p_) throw Error("out of memory");
    std::memset(p_.get(), 0, 4 * n);
  }
  float* data() { return p_.get(); }
  Span<float> span() { return Span<float>(p_.get(), n_); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::size_t n_;
  std::unique_ptr<float[], Free> p_;
};

// One row of the comm table and its JSON record (both backends).
struct CommRow {
  const char* method;
  int64_t bytes, wire;
  Timing t;
  double size, busfactor;
  int64_t wrong;
};

void print_comm_rows(const std::vector<CommRow>& rows, int64_t d, int W, const std::string& backend,
                     double fp32_median_ms, std::ofstream& json) {
  for (const CommRow& row : rows) {
    const double algbw = row.size / (row.t.median * 1e-3) / 1e9;  // GB/s
    const double speedup = fp32_median_ms / row.t.median;
    fmt::print("{:>11} {:>14} {:>12} {:>12} {:>10.3f} {:>10.3f} {:>10.3f} {:>9.3f} {:>9.3f} {:>7.2f}x {:>7}\n", d,
               row.method, row.bytes, row.wire, row.t.median, row.t.min, row.t.max, algbw, algbw * row.busfactor,
               speedup, row.wrong);
    if (json.is_open())
      json << JsonLine()
                  .add("method", row.method)
                  .add("elements", d)
                  .add("world", W)
                  .add("backend", backend)
                  .add("bytes_per_rank", row.bytes)
                  .add("wire_bytes_per_rank", row.wire)
                  .add("time_ms_median", row.t.median)
                  .add("time_ms_min", row.t.min)
                  .add("time_ms_max", row.t.max)
                  .add("algbw", algbw)
                  .add("busbw", algbw * row.busfactor)
                  .add("speedup_vs_fp32", speedup)
                  .add("wrong", row.wrong)
                  .str()
           << "\n";
  }
  std::fflush(stdout);
}

void print_comm_header() {
  fmt::print("{:>11} {:>14} {:>12} {:>12} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8} {:>7}\n", "elements", "method",
             "bytes/rank", "wire B/rank", "median ms", "min ms", "max ms", "algbw", "busbw", "speedup", "wrong");
}

// Rank r's gradient for the compressed check: a function of (r, i) alone.
void fill_grad(Span<float> g, int rank) {
  std::mt19937 rng(1234 + rank);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : g) v = nd(rng);
}

// Every rank's first message for one layer of d elements (EF state zero, lr 0.01),
// rebuilt from its seed with the portable codec: the reference of the comm checks.
std::vector<uint32_t> first_messages(const LayerTable& table, int W, std::vector<float>* scales) {
  const int64_t d = table.size(0);
  std::vector<uint32_t> msgs(W * table.message_words());
  std::vector<float> g(d), st(d);
  scales->assign(W, 0.0f);
  for (int w = 0; w < W; ++w) {
    fill_grad(g, w);
    std::fill(st.begin(), st.end(), 0.0f);
    codec::LayerBuffers b;
    b.grad = Span<const float>(g);
    b.state = Span<float>(st);
    b.words = Span<uint32_t>(msgs.data() + w * table.message_words(), table.words(0));
    codec::CompressParams cp;
    cp.lr = 0.01f;
    (*scales)[w] = codec::compress_layer(b, cp, codec::Isa::kPortable);
    std::memcpy(&msgs[w * table.message_words() + table.scale_offset_words()], &(*scales)[w], 4);
  }
  return msgs;
}

#if defined(EFSIGN_HAVE_CUDA)
// The NCCL sweep: device buffers, one GPU per rank (the local rank). Rows: fp32
// allreduce; "compressed" = compress kernel + allgather + decode-apply kernel, end to
// end; the allgather alone. Checks, untimed: the allreduce of small integers exactly;
// this rank's packed words bit for bit against the CPU codec; the decoded update
// against the CPU decode of every rank's message rebuilt from its seed, to float
// rounding (the GPU's L1 tree differs, so scales may differ in the last bit).
int run_comm_nccl(MpiCommunicator& comm, double begin, double end, double factor, int iters, int warmup,
                  std::ofstream& json) {
  namespace k = efsign::kernels;
  const int W = comm.size();
  const bool root = comm.rank() == 0;
  NcclCommunicator nccl(comm, mpi_local_rank(), 300.0);
  if (root) {
    fmt::print("# efsign-bench comm: {} ranks, backend nccl (GPU {} on rank 0), {} iterations after {} warm-up\n", W,
               nccl.device(), iters, warmup);
    fmt::print("# allreduce: S = 4d, busbw = algbw * 2(W-1)/W;  allgather/compressed: S = W * message, "
               "busbw = algbw * (W-1)/W\n");
    print_comm_header();
  }
  for (double dd = begin; dd <= end * 1.0000001; dd *= factor) {
    const int64_t d = static_cast<int64_t>(std::llround(dd));
    const LayerTable table({d});
    const k::ChunkPlan plan = k::ChunkPlan::build(table.sizes());
    const int nc = static_cast<int>(plan.chunks.size());
    k::DeviceBuffer<float> flat(d), grad(d), state(d), param(d), prev(1);
    k::DeviceBuffer<double> partials(std::max(1, nc));
    k::DeviceBuffer<uint32_t> send(table.message_words()), recv(W * table.message_words());
    k::DeviceBuffer<k::Chunk> chunks(plan.chunks.size());
    k::DeviceBuffer<int32_t> first(plan.layer_first_chunk.size());
    k::DeviceBuffer<k::DeviceLayer> layer(1);
    chunks.upload(plan.chunks);
    first.upload(plan.layer_first_chunk);
    k::DeviceLayer dl;
    dl.grad = grad.get();
    dl.param = param.get();
    dl.state = state.get();
    dl.n = d;
    layer.upload({dl});
    std::vector<float> g(d);
    fill_grad(g, comm.rank());
    grad.upload(g);
    state.upload(std::vector<float>(d, 0.0f));
    param.upload(std::vector<float>(d, 0.0f));
    prev.upload({0.0f});
    k::CompressConfig cc;
    cc.lr = 0.01f;
    auto compress = [&] {
      k::compress_launch(layer.get(), 1, chunks.get(), nc, first.get(), table.total_words(), cc, prev.get(),
                         partials.get(), send.get(), nullptr);
    };
    auto allgather = [&] {
      nccl.allgather(Span<const std::byte>(reinterpret_cast<const std::byte*>(send.get()), table.message_bytes()),
                     Span<std::byte>(reinterpret_cast<std::byte*>(recv.get()), W * table.message_bytes()));
    };
    auto decode = [&] {
      k::decode_apply_launch(layer.get(), 1, chunks.get(), nc, recv.get(), W, table.message_words(),
                             table.total_words(), nullptr);
    };
    // ---- correctness, untimed.
    int64_t wrong_ar = 0, wrong_c = 0;
    {
      std::vector<float> h(d);
      for (int64_t i = 0; i < d; ++i) h[i] = static_cast<float>((i % 7) + comm.rank());
      flat.upload(h);
      nccl.allreduce_sum(Span<float>(flat.get(), d));
      h = flat.download();
      for (int64_t i = 0; i < d; ++i) wrong_ar += h[i] != static_cast<float>(W * (i % 7) + W * (W - 1) / 2);
    }
    compress();
    allgather();
    decode();
    EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
    {
      std::vector<float> scales, want(d, 0.0f);
      const std::vector<uint32_t> msgs = first_messages(table, W, &scales);
      const std::vector<uint32_t> mine = send.download();
      for (int64_t i = 0; i < table.words(0); ++i)
        wrong_c += mine[i] != msgs[comm.rank() * table.message_words() + i];
      codec::decode_average_apply(Span<const uint32_t>(msgs), W, table, 0, Span<float>(want), codec::Isa::kPortable);
      const std::vector<float> got = param.download();
      for (int64_t i = 0; i < d; ++i)
        wrong_c += !(std::fabs(got[i] - want[i]) <= 1e-6f * std::fabs(want[i]) + 1e-30f);
    }
    // ---- timed (the host waits for each collective; kernels are synchronised here).
    const Timing t_ar = time_it(comm, warmup, iters, [&] { nccl.allreduce_sum(Span<float>(flat.get(), d)); });
    const Timing t_ag = time_it(comm, warmup, iters, allgather);
    const Timing t_c = time_it(comm, warmup, iters, [&] {
      compress();
      allgather();
      decode();
      EFSIGN_CUDA_CHECK(cudaDeviceSynchronize());
    });
    if (root) {
      const double msg = static_cast<double>(table.message_bytes());
      print_comm_rows(
          {{"fp32-allreduce", 4 * d, ring_allreduce_wire_bytes(4 * d, W), t_ar, 4.0 * d, 2.0 * (W - 1) / W, wrong_ar},
           {"compressed", table.message_bytes(), ring_allgather_wire_bytes(table.message_bytes(), W), t_c, W * msg,
            (W - 1.0) / W, wrong_c},
           {"allgather", table.message_bytes(), ring_allgather_wire_bytes(table.message_bytes(), W), t_ag, W * msg,
            (W - 1.0) / W, 0}},
          d, W, "nccl", t_ar.median, json);
    }
    if ((wrong_ar || wrong_c) && root)
      fmt::print(stderr, "efsign-bench: WRONG RESULTS at {} elements: allreduce {}, compressed {}\n", d, wrong_ar,
                 wrong_c);
  }
  return 0;
}
#endif

int run_comm(int argc, char** argv, MpiCommunicator& comm) {
  cxxopts::Options spec("efsign-bench comm", "compressed exchange vs fp32 allreduce, size sweep");
  spec.add_options()("b,begin", "first size (elements)", cxxopts::value<double>()->default_value("1e3"))(
      "e,end", "last size (elements)", cxxopts::value<double>()->default_value("1e8"))(
      "f,factor", "size multiplier", cxxopts::value<double>()->default_value("10"))(
      "iters", "timed iterations", cxxopts::value<int>()->default_value("20"))(
      "warmup", "untimed iterations", cxxopts::value<int>()->default_value("3"))(
      "backend", "mpi (host buffers, every exchange) | nccl (one GPU per rank: fp32 allreduce, the compressed "
                 "allgather exchange with the CUDA kernels, allgather alone)",
      cxxopts::value<std::string>()->default_value("mpi"))(
      "json", "write records here (rank 0)", cxxopts::value<std::string>()->default_value(""))("h,help", "help");
  auto r = spec.parse(argc, argv);
  if (r.count("help")) {
    if (comm.rank() == 0) fmt::print("{}", spec.help());
    return 0;
  }
  const std::string backend = r["backend"].as<std::string>();
  if (backend != "mpi" && backend != "nccl") throw UsageError("--backend must be mpi or nccl");
  const double begin = r["begin"].as<double>(), end = r["end"].as<double>(), factor = r["factor"].as<double>();
  const int iters = r["iters"].as<int>(), warmup = r["warmup"].as<int>();
  if (!(begin >= 1 && end >= begin && factor > 1 && iters >= 1 && warmup >= 0))
    throw UsageError("need 1 <= begin <= end, factor > 1, iters >= 1, warmup >= 0");
  const int W = comm.size();
  const bool root = comm.rank() == 0;
  std::ofstream json;
  if (root && !r["json"].as<std::string>().empty()) {
    json.open(r["json"].as<std::string>());
    if (!json) throw InputError("cannot open the --json file for writing");
  }
  if (backend == "nccl") {
#if defined(EFSIGN_HAVE_CUDA)
    return run_comm_nccl(comm, begin, end, factor, iters, warmup, json);
#else
    throw UsageError("--backend nccl: efsign was built without CUDA kernels and NCCL");
#endif
  }
  const codec::Isa isa = codec::best_isa();
  if (root) {
    fmt::print("# efsign-bench comm: {} ranks, backend {}, codec {}, {} iterations after {} warm-up\n", W,
               comm.backend(), codec::isa_name(isa), iters, warmup);
    fmt::print("# allreduce: S = 4d, busbw = algbw * 2(W-1)/W;  allgather/compressed/vote: S = W * message, "
               "busbw = algbw * (W-1)/W;  two-phase: S = message, busbw = algbw * 2(W-1)/W\n");
    fmt::print("# bytes/rank: handed to the communicator; wire B/rank: put on the network (ring model, "
               "bench/README.md)\n");
    print_comm_header();
  }
  for (double dd = begin; dd <= end * 1.0000001; dd *= factor) {
    const int64_t d = static_cast<int64_t>(std::llround(dd));
    LayerTable table({d});
    std::vector<float> flat(d), grad(d), param(d, 0.0f);
    std::vector<uint32_t> send(table.message_words()), recv(W * table.message_words());
    fill_grad(grad, comm.rank());
    // One exchange object per method, fed by the same EF compress as the trainer's.
    struct Method {
      ExchangeKind kind;
      const char* name;
      std::unique_ptr<SignExchange> ex;
      std::vector<float> state;
      float prev_scale = 0.0f;
    };
    Method methods[] = {{ExchangeKind::kAllgather, "compressed", nullptr, {}, 0.0f},
                        {ExchangeKind::kTwoPhase, "two-phase", nullptr, {}, 0.0f},
                        {ExchangeKind::kVote, "vote", nullptr, {}, 0.0f}};
    for (Method& m : methods) {
      m.ex = std::make_unique<SignExchange>(m.kind, table, std::vector<Bucket>{Bucket{0, 1}}, comm, isa);
      m.state.assign(d, 0.0f);
    }
    auto compress_into = [&](Method& m) {
      codec::LayerBuffers b;
      b.grad = Span<const float>(grad);
      b.state = Span<float>(m.state);
      b.prev_scale = m.prev_scale;
      b.words = m.ex->words_of(0);
      codec::CompressParams cp;
      cp.lr = 0.01f;
      m.prev_scale = codec::compress_layer(b, cp, isa);
      m.ex->set_scale(0, m.prev_scale);
    };
    auto end_to_end = [&](Method& m) {
      compress_into(m);
      m.ex->exchange(0);
      m.ex->apply(0, Span<float>(param));
      m.ex->commit();
    };
    auto allgather = [&] {
      comm.allgather(as_bytes(Span<const uint32_t>(send)), as_writable_bytes(Span<uint32_t>(recv)));
    };
    // ---- correctness, untimed, from zero state and parameters.
    int64_t wrong_ar = 0;
    for (int64_t i = 0; i < d; ++i) flat[i] = static_cast<float>((i % 7) + comm.rank());
    comm.allreduce_sum(Span<float>(flat));
    for (int64_t i = 0; i < d; ++i)
      wrong_ar += flat[i] != static_cast<float>(W * (i % 7) + W * (W - 1) / 2);
    // Every rank's first message, rebuilt from its seed with the portable path.
    std::vector<float> scales;
    const std::vector<uint32_t> msgs = first_messages(table, W, &scales);
    auto bit = [&](int w, int64_t i) { return (msgs[w * table.message_words() + i / 32] >> (i % 32)) & 1u; };
    int64_t wrong[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      std::vector<float> got(d, 0.0f), want(d, 0.0f);
      Method& m = methods[k];
      compress_into(m);
      m.ex->exchange(0);
      m.ex->apply(0, Span<float>(got));
      m.ex->commit();
      if (m.kind == ExchangeKind::kAllgather) {
        codec::decode_average_apply(Span<const uint32_t>(msgs), W, table, 0, Span<float>(want), codec::Isa::kPortable);
      } else if (m.kind == ExchangeKind::kVote) {  // written out: sign of the sum of signs x mean scale
        float sum = 0.0f;
        for (int w = 0; w < W; ++w) sum += scales[w];
        const float mean = sum / static_cast<float>(W);
        for (int64_t i = 0; i < d; ++i) {
          int margin = 0;
          for (int w = 0; w < W; ++w) margin += bit(w, i) ? 1 : -1;
          want[i] = margin > 0 ? 0.0f - mean : margin < 0 ? 0.0f + mean : 0.0f;
        }
      } else {  // two-phase, written out (Note [two-phase]): server error 0 at the first step
        const int64_t K = (table.words(0) + W - 1) / W;
        for (int64_t i0 = 0; i0 < d; i0 += 32 * K) {
          const int64_t i1 = std::min(d, i0 + 32 * K);
          std::vector<float> p(i1 - i0);
          double lane[32] = {};  // the codec's L1: lane = i % 32, halving tree
          for (int64_t i = i0; i < i1; ++i) {
            float acc = 0.0f;
            for (int w = 0; w < W; ++w) acc += bit(w, i) ? scales[w] : -scales[w];
            p[i - i0] = 0.0f + acc / static_cast<float>(W);
            lane[(i - i0) % 32] += std::fabs(static_cast<double>(p[i - i0]));
          }
          for (int w = 16; w >= 1; w /= 2)
            for (int j = 0; j < w; ++j) lane[j] = lane[j] + lane[j + w];
          const double l1 = lane[0];
          const float s2 = static_cast<float>(l1 / static_cast<double>(i1 - i0));
          for (int64_t i = i0; i < i1; ++i) want[i] = 0.0f - (p[i - i0] >= 0.0f ? s2 : -s2);
        }
      }
      for (int64_t i = 0; i < d; ++i) wrong[k] += std::memcmp(&got[i], &want[i], 4) != 0;
    }

    // ---- timed.
    const Timing t_ar = time_it(comm, warmup, iters, [&] { comm.allreduce_sum(Span<float>(flat)); });
    const Timing t_ag = time_it(comm, warmup, iters, allgather);
    Timing t_m[3];
    for (int k = 0; k < 3; ++k) t_m[k] = time_it(comm, warmup, iters, [&] { end_to_end(methods[k]); });
    if (root) {
      const double msg = static_cast<double>(table.message_bytes());
      const double s_ar = 4.0 * d, s_ag = static_cast<double>(W) * msg;
      print_comm_rows(
          {{"fp32-allreduce", 4 * d, ring_allreduce_wire_bytes(4 * d, W), t_ar, s_ar, 2.0 * (W - 1) / W, wrong_ar},
           {"compressed", methods[0].ex->handed_bytes_per_step(), methods[0].ex->wire_bytes_per_step(), t_m[0], s_ag,
            (W - 1.0) / W, wrong[0]},
           {"two-phase", methods[1].ex->handed_bytes_per_step(), methods[1].ex->wire_bytes_per_step(), t_m[1], msg,
            2.0 * (W - 1) / W, wrong[1]},
           {"vote", methods[2].ex->handed_bytes_per_step(), methods[2].ex->wire_bytes_per_step(), t_m[2], s_ag,
            (W - 1.0) / W, wrong[2]},
           {"allgather", table.message_bytes(), ring_allgather_wire_bytes(table.message_bytes(), W), t_ag, s_ag,
            (W - 1.0) / W, 0}},
          d, W, comm.backend(), t_ar.median, json);
    }
    if (wrong_ar || wrong[0] || wrong[1] || wrong[2]) {
      if (root)
        fmt::print(stderr, "efsign-bench: WRONG RESULTS at {} elements: allreduce {}, compressed {}, two-phase {}, "
                           "vote {}\n", d, wrong_ar, wrong[0], wrong[1], wrong[2]);
    }
  }
  return 0;
}


int run_codec(int argc, char** argv, MpiCommunicator& comm) {
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
  std::ofstream json;
  if (!r["json"].as<std::string>().empty()) json.open(r["json"].as<std::string>());
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
    if (json.is_open())
      json << JsonLine()
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
                  .str()
           << "\n";
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
  return 0;
}

int run_loader(int argc, char** argv, MpiCommunicator& comm) {
  cxxopts::Options spec("efsign-bench loader", "input pipeline vs training throughput, one process");
  spec.add_options()("dataset", "synthetic (CIFAR-shaped) | cifar10 | cifar100",
                     cxxopts::value<std::string>()->default_value("synthetic"))(
      "data-dir", "CIFAR folder", cxxopts::value<std::string>()->default_value(""))(
      "model", "model trained on the batches", cxxopts::value<std::string>()->default_value("resnet18"))(
      "batch-size", "images per batch", cxxopts::value<int64_t>()->default_value("128"))(
      "batches", "timed batches", cxxopts::value<int>()->default_value("5"))(
      "threads", "intra-op threads", cxxopts::value<int>()->default_value("1"))("h,help", "help");
  auto r = spec.parse(argc, argv);
  if (r.count("help")) {
    if (comm.rank() == 0) fmt::print("{}", spec.help());
    return 0;
  }
  if (comm.rank() != 0) return 0;
  const std::string ds = r["dataset"].as<std::string>();
  const int64_t batch = r["batch-size"].as<int64_t>();
  const int batches = r["batches"].as<int>();
  if (batch < 1 || batches < 1) throw UsageError("need --batch-size >= 1 and --batches >= 1");
  at::set_num_threads(std::max(1, r["threads"].as<int>()));
  DataSplit data;
  if (ds == "cifar10") data = load_cifar10(r["data-dir"].as<std::string>());
  else if (ds == "cifar100") data = load_cifar100(r["data-dir"].as<std::string>());
  else if (ds == "synthetic") data = make_synthetic(4 * batch * batches, 16, 3, 32, 32, 10, 1);
  else throw UsageError("--dataset must be synthetic, cifar10 or cifar100");
  EpochSharder sharder(data.train.size(), 1, 0, batch, 7);
  auto load = [&](int64_t step) {
    const auto idx = sharder.batch(0, step % sharder.steps_per_epoch());
    at::Tensor ix = at::from_blob(const_cast<int64_t*>(idx.data()), {static_cast<int64_t>(idx.size())}, at::kLong);
    at::Tensor u8 = augment_crop_flip(data.train.images.index_select(0, ix), static_cast<uint64_t>(step));
    return Batch{normalize_images(data.train, u8), data.train.labels.index_select(0, ix)};
  };
  // Loader alone: many batches (it is fast); training: `batches` of them.
  const int loader_batches = 20 * batches;
  const auto t0 = Clock::now();
  for (int b = 0; b < loader_batches; ++b) load(b);
  const double loader_s = std::chrono::duration<double>(Clock::now() - t0).count();
  torch::manual_seed(1);
  auto model = make_model(r["model"].as<std::string>(),
                          ModelSpec{data.train.channels(), data.train.height(), data.train.width(), data.train.num_classes});
  std::vector<Batch> ready;
  for (int b = 0; b < batches; ++b) ready.push_back(load(b));
  model->zero_grad();
  torch::nn::functional::cross_entropy(model->forward(ready[0].images), ready[0].labels).backward();  // warm-up
  const auto t1 = Clock::now();
  for (auto& bt : ready) {
    model->zero_grad();
    torch::nn::functional::cross_entropy(model->forward(bt.images), bt.labels).backward();
  }
  const double train_s = std::chrono::duration<double>(Clock::now() - t1).count();
  const double loader_ips = loader_batches * batch / loader_s, train_ips = batches * batch / train_s;
  fmt::print("# efsign-bench loader: {} ({} train images), batch {}, {} thread(s)\n", data.train.name,
             data.train.size(), batch, at::get_num_threads());
  fmt::print("loader (gather + pad-4 crop + flip + normalise): {:>10.0f} images/s\n", loader_ips);
  fmt::print("{} forward+backward:                     {:>10.0f} images/s\n", r["model"].as<std::string>(), train_ips);
  fmt::print("loader / training: {:.1f}x ({})\n", loader_ips / train_ips,
             loader_ips > 2 * train_ips ? "the loader is not the bottleneck" : "THE LOADER MAY BE A BOTTLENECK");
  return 0;
}

int run_step(int argc, char** argv, MpiCommunicator& comm) {
  cxxopts::Options spec("efsign-bench step", "per-step time breakdown for every optimizer and exchange");
  spec.add_options()("model", "mlp | convnet (28x28x1) | resnet18 | vgg19 (32x32x3)",
                     cxxopts::value<std::string>()->default_value("convnet"))(
      "batch-size", "per rank", cxxopts::value<int64_t>()->default_value("64"))(
      "steps", "timed steps per row", cxxopts::value<int>()->default_value("30"))(
      "warmup", "untimed steps", cxxopts::value<int>()->default_value("3"))(
      "threads", "intra-op threads per rank", cxxopts::value<int>()->default_value("1"))(
      "optimizers", "rows to run, comma-separated", cxxopts::value<std::string>()->default_value(
                                                         "sgdm,signsgd,signum,ef-signsgd"))(
      "exchanges", "exchanges for the ef-signsgd rows, comma-separated (allgather, two-phase, vote)",
      cxxopts::value<std::string>()->default_value("allgather,two-phase,vote"))(
      "overlap", "run every sign row a second time (label +overlap) exchanging buckets on a communication thread "
                 "during backward, and report the share of the exchange hidden behind backward")(
      "bucket-mb", "bucket size for --overlap (MiB of fp32)", cxxopts::value<double>()->default_value("25"))(
      "json", "write records here (rank 0)", cxxopts::value<std::string>()->default_value(""))("h,help", "help");
  auto r = spec.parse(argc, argv);
  if (r.count("help")) {
    if (comm.rank() == 0) fmt::print("{}", spec.help());
    return 0;
  }
  const std::string model_name = r["model"].as<std::string>();
  const int64_t batch = r["batch-size"].as<int64_t>();
  const int steps = r["steps"].as<int>(), warmup = r["warmup"].as<int>();
  const bool overlap = r.count("overlap") > 0;
  const double bucket_mb = r["bucket-mb"].as<double>();
  if (batch < 1 || steps < 1 || warmup < 0) throw UsageError("need --batch-size >= 1, --steps >= 1, --warmup >= 0");
  if (!(bucket_mb > 0)) throw UsageError("--bucket-mb must be > 0");
  if (overlap && !mpi_serialized_threads()) throw UsageError("--overlap needs MPI_THREAD_SERIALIZED");
  auto split = [](const std::string& csv) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : csv + ",") {
      if (c == ',') {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    return out;
  };
  struct RowSpec {
    std::string label;
    OptimizerKind kind;
    ExchangeKind exchange;
    bool overlap;
  };
  // With --overlap every sign row runs twice, without and with (side by side, one run).
  std::vector<RowSpec> row_specs;
  auto add_rows = [&](const std::string& label, OptimizerKind kind, ExchangeKind ex) {
    row_specs.push_back({label, kind, ex, false});
    if (overlap && kind != OptimizerKind::kSgdm) row_specs.push_back({label + "+overlap", kind, ex, true});
  };
  for (const std::string& name : split(r["optimizers"].as<std::string>())) {
    const OptimizerKind kind = parse_optimizer(name);
    if (kind == OptimizerKind::kEfSignSgd) {
      for (const std::string& ex : split(r["exchanges"].as<std::string>()))
        add_rows(ex == "allgather" ? name : name + "/" + ex, kind, parse_exchange(ex));
    } else {
      add_rows(name, kind, ExchangeKind::kAllgather);
    }
  }
  if (row_specs.empty()) throw UsageError("--optimizers selects nothing");
  const bool cifar = model_name == "resnet18" || model_name == "vgg19";
  const ModelSpec mspec = cifar ? ModelSpec{3, 32, 32, model_name == "resnet18" ? 100 : 10} : ModelSpec{};
  at::set_num_threads(std::max(1, r["threads"].as<int>()));
  const bool root = comm.rank() == 0;
  std::ofstream json;
  if (root && !r["json"].as<std::string>().empty()) json.open(r["json"].as<std::string>());
  if (root) {
    fmt::print("# efsign-bench step: {} ranks, backend {}, model {}, batch {} per rank, {} steps after {} warm-up{} "
               "(ms per step, mean over steps and ranks)\n",
               comm.size(), comm.backend(), model_name, batch, steps, warmup,
               overlap ? fmt::format(", --overlap with {} MiB buckets", bucket_mb) : std::string());
    if (overlap)
      fmt::print("# --overlap: compress and comm ran on the communication thread; wait = what step() waited for;\n"
                 "# hidden = 1 - wait / (compress + comm), the share of the exchange hidden behind backward\n");
    fmt::print("{:>29} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>12} {:>12}\n", "optimizer",
               "fwd+bwd", "compress", "comm", "update", "wait", "step ms", "img/s", "hidden", "bytes/step",
               "wire B/step");
  }
  for (const RowSpec& row : row_specs) {
    torch::manual_seed(1);
    auto model = make_model(model_name, mspec);
    OptimizerConfig cfg;
    cfg.kind = row.kind;
    cfg.exchange = row.exchange;
    cfg.overlap = row.overlap;
    cfg.bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
    cfg.lr = 1e-3;
    auto opt = make_optimizer(model->parameters(), comm, comm, cfg);
    torch::manual_seed(2 + comm.rank());
    const at::Tensor x = torch::randn({batch, mspec.channels, mspec.height, mspec.width});
    const at::Tensor y = torch::randint(0, mspec.num_classes, {batch});
    double sums[6] = {0, 0, 0, 0, 0, 0};  // fwd_bwd, compress, comm, update, wait, step
    for (int s = 0; s < warmup + steps; ++s) {
      comm.barrier();  // each step starts together: the slowest rank is not carried into the next
      const auto t0 = Clock::now();
      model->zero_grad();
      torch::nn::functional::cross_entropy(model->forward(x), y).backward();
      const double fb = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      opt->step();
      const double total = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      if (s < warmup) continue;
      const StepStats& st = opt->last_step();
      sums[0] += fb;
      sums[1] += st.compress_ms;
      sums[2] += st.comm_ms;
      sums[3] += st.update_ms;
      sums[4] += st.wait_ms;
      sums[5] += total;
    }
    comm.allreduce_sum(Span<double>(sums, 6));
    for (double& v : sums) v /= static_cast<double>(steps) * comm.size();
    const double img_s = 1e3 * static_cast<double>(batch * comm.size()) / sums[5];
    const bool overlapped = cfg.overlap;
    const double hidden = overlapped && sums[1] + sums[2] > 0 ? 1.0 - sums[4] / (sums[1] + sums[2]) : 0.0;
    if (root) {
      fmt::print("{:>29} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.0f} {:>8} {:>12} {:>12}\n",
                 row.label, sums[0], sums[1], sums[2], sums[3], sums[4], sums[5], img_s,
                 overlapped ? fmt::format("{:.0f}%", 100 * hidden) : std::string("-"), opt->last_step().bytes_sent,
                 opt->last_step().wire_bytes);
      if (json.is_open())
        json << JsonLine()
                    .add("optimizer", optimizer_name(row.kind))
                    .add("exchange", row.kind == OptimizerKind::kSgdm ? std::string("allreduce")
                                                                      : exchange_kind_name(row.exchange))
                    .add("label", row.label)
                    .add("overlap", overlapped)
                    .add("model", model_name)
                    .add("world", comm.size())
                    .add("batch_size", batch)
                    .add("fwd_bwd_ms", sums[0])
                    .add("compress_ms", sums[1])
                    .add("comm_ms", sums[2])
                    .add("update_ms", sums[3])
                    .add("wait_ms", sums[4])
                    .add("step_ms", sums[5])
                    .add("hidden_share", overlapped ? hidden : 0.0)
                    .add("images_per_sec", img_s)
                    .add("bytes_sent_per_step", opt->last_step().bytes_sent)
                    .add("wire_bytes_per_step", opt->last_step().wire_bytes)
                    .str()
             << "\n";
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession mpi(&argc, &argv);
  const bool root = mpi.world_rank() == 0;
  const std::string sub = argc > 1 ? argv[1] : "";
  if (sub != "comm" && sub != "step" && sub != "codec" && sub != "loader") {
    if (root)
      fmt::print(stderr, "usage: mpirun -np W efsign-bench comm|step|codec|loader [--help]\n"
                         "  loader: input pipeline vs forward+backward images/s\n"
                         "  comm: fp32 allreduce vs compressed exchange, size sweep\n"
                         "  codec: CPU codec vs memcpy on a real model's layer table\n"
                         "  step: per-step time breakdown for every optimizer\n");
    return sub == "--help" || sub == "-h" ? 0 : 2;
  }
  try {
    MpiCommunicator comm;
    if (sub == "comm") return run_comm(argc - 1, argv + 1, comm);
    if (sub == "codec") return run_codec(argc - 1, argv + 1, comm);
    if (sub == "loader") return run_loader(argc - 1, argv + 1, comm);
    return run_step(argc - 1, argv + 1, comm);
  } catch (const cxxopts::exceptions::exception& e) {
    if (root) fmt::print(stderr, "efsign-bench: error: {}\n", e.what());
    return 2;
  } catch (const UsageError& e) {
    if (root) fmt::print(stderr, "efsign-bench: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "efsign-bench: fatal ({}): {}\n", where_am_i(), e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}
