// efsign-bench comm: an nccl-tests-style size sweep of the fp32 allreduce against each
// compressed exchange end to end (EF compress + exchange + apply), through the very
// objects the trainer uses (SignExchange over a data communicator and a codec), on
// the host codec with MPI or the CUDA codec with NCCL or MPI; with a built-in check.
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "bench_common.h"
#include "efsign/codec.h"
#include "efsign/exchange.h"
#include "efsign/layer_table.h"
#include "efsign/metrics.h"
#include "efsign/mpi_communicator.h"
#include "efsign/sign_codec.h"
#include "efsign/transport.h"

namespace efsign::bench {
namespace {

// One row of the table and its JSON record.
struct CommRow {
  const char* method;
  int64_t bytes, wire;
  Timing t;
  double size, busfactor;
  int64_t wrong;
};

void print_comm_rows(const std::vector<CommRow>& rows, int64_t d, int W, const std::string& backend,
                     const std::string& codec, double fp32_median_ms, JsonFile& json) {
  for (const CommRow& row : rows) {
    const double algbw = row.size / (row.t.median * 1e-3) / 1e9;  // GB/s
    const double speedup = fp32_median_ms / row.t.median;
    fmt::print("{:>11} {:>14} {:>12} {:>12} {:>10.3f} {:>10.3f} {:>10.3f} {:>9.3f} {:>9.3f} {:>7.2f}x {:>7}\n", d,
               row.method, row.bytes, row.wire, row.t.median, row.t.min, row.t.max, algbw, algbw * row.busfactor,
               speedup, row.wrong);
    json.write(JsonLine()
                   .add("method", row.method)
                   .add("elements", d)
                   .add("world", W)
                   .add("backend", backend)
                   .add("codec", codec)
                   .add("bytes_per_rank", row.bytes)
                   .add("wire_bytes_per_rank", row.wire)
                   .add("time_ms_median", row.t.median)
                   .add("time_ms_min", row.t.min)
                   .add("time_ms_max", row.t.max)
                   .add("algbw", algbw)
                   .add("busbw", algbw * row.busfactor)
                   .add("speedup_vs_fp32", speedup)
                   .add("wrong", row.wrong)
                   .str());
  }
  std::fflush(stdout);
}

// Every rank's first message for one layer of d elements (EF state zero, lr 0.01),
// rebuilt from its seed with the portable codec: the reference of the checks.
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

// The update each exchange must produce at the first step from zero parameters,
// written out here from every rank's message (not by the library's exchange code).
std::vector<float> expected_update(ExchangeKind kind, const LayerTable& table, int W) {
  const int64_t d = table.size(0);
  std::vector<float> scales, want(d, 0.0f);
  const std::vector<uint32_t> msgs = first_messages(table, W, &scales);
  auto bit = [&](int w, int64_t i) { return (msgs[w * table.message_words() + i / 32] >> (i % 32)) & 1u; };
  if (kind == ExchangeKind::kAllgather) {
    codec::decode_average_apply(Span<const uint32_t>(msgs), W, table, 0, Span<float>(want), codec::Isa::kPortable);
  } else if (kind == ExchangeKind::kVote) {  // sign of the sum of signs x mean scale
    float sum = 0.0f;
    for (int w = 0; w < W; ++w) sum += scales[w];
    const float mean = sum / static_cast<float>(W);
    for (int64_t i = 0; i < d; ++i) {
      int margin = 0;
      for (int w = 0; w < W; ++w) margin += bit(w, i) ? 1 : -1;
      want[i] = margin > 0 ? 0.0f - mean : margin < 0 ? 0.0f + mean : 0.0f;
    }
  } else {  // two-phase (Note [two-phase]): server error 0 at the first step
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
      const float s2 = static_cast<float>(lane[0] / static_cast<double>(i1 - i0));
      for (int64_t i = i0; i < i1; ++i) want[i] = 0.0f - (p[i - i0] >= 0.0f ? s2 : -s2);
    }
  }
  return want;
}

// Host memory per element of the largest size, per rank: the peak RSS of this tool grew
// by 54-57 bytes per element on 2 and 3 ranks (host codec, MPI; 1e7 to 2e7 elements):
// the gradient, each exchange's parameters and EF state, the checks' copies and the
// fp32 buffer (about 14 floats), plus messages of d/8 bytes from every rank (the W term).
constexpr double kCommBytesPerElement = 56;

// Why this rank cannot run the sweep ("" if it can): its largest size does not fit the
// memory of this host, for all of the host's ranks, or MPI's int counts (MPI transport).
// Collective (mpi_local_size).
std::string size_problem(double begin, double end, double factor, int W, Transport transport) {
  double largest = begin;
  for (double dd = begin; dd <= end * 1.0000001; dd *= factor) largest = dd;
  const double d = std::round(largest);
  const int local = mpi_local_size();
  std::string why = memory_shortfall(
      d * (kCommBytesPerElement + W) * local,
      fmt::format("comm: the sweep's largest size (-e), {:.0f} elements, on {} rank{} of this host", d, local,
                  local == 1 ? "" : "s"));
  const double message_bytes = 4.0 * (std::ceil(d / 32) + 1);
  if (why.empty() && transport == Transport::kMpi && (d > INT_MAX || W * message_bytes > INT_MAX))
    why = fmt::format("comm: the sweep's largest size (-e), {:.0f} elements, exceeds MPI's int counts (at most {} "
                      "floats in one allreduce and {} bytes in one allgather; {} ranks would gather {:.0f})",
                      d, INT_MAX, INT_MAX, W, W * message_bytes);
  return why;
}

void print_comm_header() {
  fmt::print("{:>11} {:>14} {:>12} {:>12} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8} {:>7}\n", "elements", "method",
             "bytes/rank", "wire B/rank", "median ms", "min ms", "max ms", "algbw", "busbw", "speedup", "wrong");
}

}  // namespace

int run_comm(int argc, char** argv, HostCommunicator& control) {
  cxxopts::Options spec("efsign-bench comm", "compressed exchange vs fp32 allreduce, size sweep");
  spec.add_options()("b,begin", "first size (elements)", cxxopts::value<double>()->default_value("1e3"))(
      "e,end", "last size (elements)", cxxopts::value<double>()->default_value("1e8"))(
      "f,factor", "size multiplier", cxxopts::value<double>()->default_value("10"))(
      "iters", "timed iterations", cxxopts::value<int>()->default_value("20"))(
      "warmup", "untimed iterations", cxxopts::value<int>()->default_value("3"))(
      "device", "cpu (the host codec) | cuda (the CUDA codec on the local rank's GPU)",
      cxxopts::value<std::string>()->default_value(""))(
      "comm", "mpi | nccl: the transport that moves the buffers", cxxopts::value<std::string>()->default_value(""))(
      "backend", "mpi (= --device cpu --comm mpi) | nccl (= --device cuda --comm nccl)",
      cxxopts::value<std::string>()->default_value("mpi"))(
      "json", "write records here (rank 0)", cxxopts::value<std::string>()->default_value(""))("h,help", "help");
  auto r = spec.parse(argc, argv);
  if (r.count("help")) {
    if (control.rank() == 0) fmt::print("{}", spec.help());
    return 0;
  }
  const std::string backend = r["backend"].as<std::string>();
  if (backend != "mpi" && backend != "nccl") throw UsageError("--backend must be mpi or nccl");
  std::string device = r["device"].as<std::string>(), comm_name = r["comm"].as<std::string>();
  if (device.empty()) device = backend == "nccl" ? "cuda" : "cpu";
  if (comm_name.empty()) comm_name = backend;
  if (device != "cpu" && device != "cuda") throw UsageError("--device must be cpu or cuda");
  const double begin = r["begin"].as<double>(), end = r["end"].as<double>(), factor = r["factor"].as<double>();
  const int iters = r["iters"].as<int>(), warmup = r["warmup"].as<int>();
  if (!(begin >= 1 && end >= begin && factor > 1 && iters >= 1 && warmup >= 0))
    throw UsageError("need 1 <= begin <= end, factor > 1, iters >= 1, warmup >= 0");
  const int W = control.size();
  const bool root = control.rank() == 0;
  TransportOptions transport;
  transport.transport = parse_transport(comm_name);
  // Refused on every rank alike: a sweep too large for a host or for MPI's counts, or a
  // --json file rank 0 cannot open.
  std::string why = size_problem(begin, end, factor, W, transport.transport);
  JsonFile json;
  if (why.empty() && root) {
    try {
      json.open(r["json"].as<std::string>());
    } catch (const InputError& e) {
      why = e.what();
    }
  }
  if (const std::string e = first_error(control, why); !e.empty()) throw UsageError(e);
  const std::shared_ptr<Codec> codec =
      device == "cuda" ? make_cuda_codec(mpi_local_rank()) : make_host_codec(codec::best_isa());
  const std::shared_ptr<Communicator> comm = make_data_communicator(control, transport);
  const bool exact = codec->device_kind() == DeviceKind::kCpu;  // the CUDA codec's scales: to float rounding
  if (root) {
    fmt::print("# efsign-bench comm: {} ranks, transport {}, codec {}, {} iterations after {} warm-up\n", W,
               comm->backend(), codec->describe(), iters, warmup);
    fmt::print("# allreduce: S = 4d, busbw = algbw * 2(W-1)/W;  allgather/compressed/vote: S = W * message, "
               "busbw = algbw * (W-1)/W;  two-phase: S = message, busbw = algbw * 2(W-1)/W\n");
    fmt::print("# bytes/rank: handed to the communicator; wire B/rank: put on the network (ring model, "
               "bench/README.md); wrong: elements that differ from the written-out reference ({})\n",
               exact ? "bit for bit" : "to 1e-6 relative: the GPU's L1 sum rounds differently");
    print_comm_header();
  }
  // Buffers the communicator moves directly: codec memory for NCCL, host memory for MPI.
  const std::shared_ptr<Codec> host = make_host_codec(codec::Isa::kPortable);
  auto comm_buffer = [&](int64_t bytes) {
    return comm->memory() == MemoryKind::kDevice ? codec->allocate(bytes) : host->allocate(bytes);
  };
  for (double dd = begin; dd <= end * 1.0000001; dd *= factor) {
    const int64_t d = static_cast<int64_t>(std::llround(dd));
    const LayerTable table({d});
    std::vector<float> host(d);
    fill_grad(host, control.rank());
    CodecBuffer grad = codec->allocate(4 * d);
    codec->copy(grad.get(), host.data(), 4 * d);
    // One exchange per method, fed by the same EF compress as the trainer's.
    struct Method {
      ExchangeKind kind;
      const char* name;
      std::unique_ptr<SignExchange> ex;
      CodecBuffer param, state, prev, server;
    };
    Method methods[] = {{ExchangeKind::kAllgather, "compressed", nullptr, {}, {}, {}, {}},
                        {ExchangeKind::kTwoPhase, "two-phase", nullptr, {}, {}, {}, {}},
                        {ExchangeKind::kVote, "vote", nullptr, {}, {}, {}, {}}};
    codec::CompressParams cp;
    cp.lr = 0.01f;
    for (Method& m : methods) {
      m.ex = std::make_unique<SignExchange>(m.kind, table, std::vector<Bucket>{Bucket{0, 1}}, comm, codec);
      m.param = codec->allocate(4 * d);
      m.state = codec->allocate(4 * d);
      m.prev = codec->allocate(4);
      m.server = codec->allocate(4 * std::max<int64_t>(1, m.ex->server_elems()));
      CodecLayer layer;
      layer.param = m.param.get<float>();
      layer.state = m.state.get<float>();
      m.ex->bind({layer}, m.prev.get<float>(), m.server.get<float>());
      m.ex->set_grad(0, grad.get<float>());
      m.ex->set_params(cp);
    }
    auto end_to_end = [&](Method& m) {
      m.ex->run(0);
      const std::string why = m.ex->finish();
      if (!why.empty()) throw Error("efsign-bench comm: " + why);
      m.ex->apply();
      codec->synchronize();
    };
    // ---- correctness, untimed, from zero state and parameters.
    CodecBuffer flat = comm_buffer(4 * d);
    int64_t wrong_ar = 0;
    {
      for (int64_t i = 0; i < d; ++i) host[i] = static_cast<float>((i % 7) + control.rank());
      auto* f = flat.get<float>();
      if (comm->memory() == MemoryKind::kDevice) codec->copy(f, host.data(), 4 * d);
      else std::memcpy(f, host.data(), 4 * d);
      codec->synchronize();
      comm->allreduce_sum(Span<float>(f, static_cast<std::size_t>(d)));
      comm->synchronize("allreduce");
      if (comm->memory() == MemoryKind::kDevice) codec->copy(host.data(), f, 4 * d);
      else std::memcpy(host.data(), f, 4 * d);
      codec->synchronize();
      for (int64_t i = 0; i < d; ++i)
        wrong_ar += host[i] != static_cast<float>(W * (i % 7) + W * (W - 1) / 2);
    }
    int64_t wrong[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      Method& m = methods[k];
      end_to_end(m);
      std::vector<float> got(d);
      codec->copy(got.data(), m.param.get(), 4 * d);
      codec->synchronize();
      const std::vector<float> want = expected_update(m.kind, table, W);
      for (int64_t i = 0; i < d; ++i)
        wrong[k] += exact ? std::memcmp(&got[i], &want[i], 4) != 0
                          : !(std::fabs(got[i] - want[i]) <= 1e-6f * std::fabs(want[i]) + 1e-30f);
    }
    // ---- timed.
    CodecBuffer send = comm_buffer(table.message_bytes()), recv = comm_buffer(W * table.message_bytes());
    const Timing t_ar = time_it(control, warmup, iters, [&] {
      comm->allreduce_sum(Span<float>(flat.get<float>(), static_cast<std::size_t>(d)));
      comm->synchronize("allreduce");
    });
    const Timing t_ag = time_it(control, warmup, iters, [&] {
      comm->allgather(Span<const std::byte>(send.get<std::byte>(), static_cast<std::size_t>(table.message_bytes())),
                      Span<std::byte>(recv.get<std::byte>(), static_cast<std::size_t>(W * table.message_bytes())));
      comm->synchronize("allgather");
    });
    Timing t_m[3];
    for (int k = 0; k < 3; ++k) t_m[k] = time_it(control, warmup, iters, [&] { end_to_end(methods[k]); });
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
          d, W, comm->backend(), codec->describe(), t_ar.median, json);
    }
    if ((wrong_ar || wrong[0] || wrong[1] || wrong[2]) && root)
      fmt::print(stderr, "efsign-bench: WRONG RESULTS at {} elements: allreduce {}, compressed {}, two-phase {}, "
                         "vote {}\n", d, wrong_ar, wrong[0], wrong[1], wrong[2]);
  }
  json.close();  // after the last collective: rank 0 failing here leaves no rank waiting
  return 0;
}

}  // namespace efsign::bench
