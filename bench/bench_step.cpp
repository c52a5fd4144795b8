// efsign-bench step: the per-step time split into forward+backward, compress, comm,
// update (and, with --overlap, the share hidden behind backward), for every optimizer
// and exchange, same model and batch, in one run.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "bench_common.h"
#include "efsign/exchange.h"
#include "efsign/metrics.h"
#include "efsign/models.h"
#include "efsign/mpi_communicator.h"
#include "efsign/optimizer.h"
#include "efsign/transport.h"

namespace efsign::bench {

int run_step(int argc, char** argv, std::shared_ptr<HostCommunicator> control) {
  HostCommunicator& comm = *control;
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
      "bucket-mb", "bucket size for --overlap (MiB of fp32)", cxxopts::value<double>()->default_value(std::to_string(kDefaultBucketBytes >> 20)))(
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
  for (const std::string& name : split_csv(r["optimizers"].as<std::string>())) {
    const OptimizerKind kind = parse_optimizer(name);
    if (kind == OptimizerKind::kEfSignSgd) {
      for (const std::string& ex : split_csv(r["exchanges"].as<std::string>()))
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
  std::ofstream json = open_json(root ? r["json"].as<std::string>() : std::string());
  // The gradients travel over a data communicator of their own, as in the trainer.
  const std::shared_ptr<Communicator> data = make_data_communicator(comm, TransportOptions{});
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
    auto opt = make_optimizer(model->parameters(), data, control, cfg);
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

}  // namespace efsign::bench
