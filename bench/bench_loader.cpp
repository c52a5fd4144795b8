// efsign-bench loader: images/s of the input pipeline alone against images/s of
// forward+backward on the same batches, one process.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "bench_common.h"
#include "efsign/data.h"
#include "efsign/models.h"

namespace efsign::bench {

int run_loader(int argc, char** argv, HostCommunicator& comm) {
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

}  // namespace efsign::bench
