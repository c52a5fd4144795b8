#include "efsign/trainer.h"

#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include "efsign/checkpoint.h"
#include "efsign/checksum.h"
#include "efsign/data.h"
#include "efsign/error.h"
#include "efsign/metrics.h"
#include "efsign/models.h"
#include "efsign/mpi_communicator.h"
#include "efsign/optimizer.h"
#include "efsign/transport.h"

namespace efsign {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string human_bytes(double b) {
  if (b >= 1 << 20) return fmt::format("{:.2f} MiB", b / (1 << 20));
  if (b >= 1 << 10) return fmt::format("{:.1f} KiB", b / (1 << 10));
  return fmt::format("{:.0f} B", b);
}

// Checksum over every parameter (and buffer, when asked), in registration order.
uint64_t model_checksum(torch::nn::Module& model, bool with_buffers) {
  uint64_t h = kFnvOffset;
  auto mix = [&](const at::Tensor& t) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    h = fnv1a(Span<const std::byte>(static_cast<const std::byte*>(c.data_ptr()), c.numel() * c.element_size()), h);
  };
  for (const auto& p : model.parameters()) mix(p);
  if (with_buffers)
    for (const auto& b : model.buffers()) mix(b);
  return h;
}

// Test-only hook (test/cli_train.sh): EFSIGN_TEST_DIVERGE_RANK=r nudges rank r's first
// parameter after global step EFSIGN_TEST_DIVERGE_STEP (default: after the last step),
// so that a replica check must fail.
void maybe_diverge_for_test(torch::nn::Module& model, int rank, int64_t step, bool at_end) {
  const char* r = std::getenv("EFSIGN_TEST_DIVERGE_RANK");
  if (!r || std::atoi(r) != rank) return;
  const char* s = std::getenv("EFSIGN_TEST_DIVERGE_STEP");
  if (s ? std::atoll(s) != step || at_end : !at_end) return;
  torch::NoGradGuard no_grad;
  model.parameters()[0].view(-1)[0].add_(1e-3);
}

// Rank 0's parameters and buffers become everyone's (the seeds already agree; this
// makes it so even if a LibTorch build initialises differently).
void broadcast_model(torch::nn::Module& model, HostCommunicator& comm) {
  torch::NoGradGuard no_grad;
  auto bcast = [&](at::Tensor t) {
    comm.broadcast(Span<std::byte>(static_cast<std::byte*>(t.data_ptr()), t.numel() * t.element_size()), 0);
  };
  for (auto& p : model.parameters()) bcast(p);
  for (auto& b : model.buffers()) bcast(b);
}

// BatchNorm running statistics are computed from each rank's own batches; average
// every floating-point buffer over the ranks (before evaluation and the final
// checksum) so that all replicas evaluate, and end, identically.
void average_buffers(torch::nn::Module& model, HostCommunicator& comm) {
  if (comm.size() == 1) return;
  torch::NoGradGuard no_grad;
  for (auto& b : model.buffers()) {
    if (!b.is_floating_point()) continue;
    at::Tensor host = b.to(at::kCPU, at::kDouble).contiguous();
    comm.allreduce_sum(Span<double>(host.data_ptr<double>(), host.numel()));
    b.copy_(host.div_(comm.size()).to(b.options()));
  }
}

ModelSpec spec_for(const TrainOptions& o) {
  const bool cifar = o.dataset == "cifar10" || o.dataset == "cifar100";
  ModelSpec spec{cifar ? 3 : 1, cifar ? 32 : 28, cifar ? 32 : 28, o.dataset == "cifar100" ? 100 : 10};
  if (o.num_classes > 0) spec.num_classes = o.num_classes;
  return spec;
}

void print_description(const TrainOptions& o) {
  const ModelSpec spec = spec_for(o);
  torch::manual_seed(o.seed);
  auto model = make_model(o.model, spec);
  const auto layers = describe_layers(*model);
  fmt::print("{} for {}x{}x{} inputs, {} classes: one layer per parameter tensor\n", o.model, spec.channels,
             spec.height, spec.width, spec.num_classes);
  fmt::print("{:>4}  {:<36} {:<18} {:>11} {:>12} {:>12}\n", "#", "name", "shape", "parameters", "fp32 B/step",
             "signs B/step");
  int64_t total = 0, fp32 = 0, comp = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    const int64_t c = 4 * words_for(l.params) + 4;  // words + the layer's scale
    fmt::print("{:>4}  {:<36} {:<18} {:>11} {:>12} {:>12}\n", i, l.name, fmt::format("{}", fmt::join(l.shape, "x")),
               l.params, 4 * l.params, c);
    total += l.params;
    fp32 += 4 * l.params;
    comp += c;
  }
  fmt::print("total: {} layers, {} parameters; bytes per rank per step: fp32 allreduce {}, packed signs {} "
             "({:.1f}x fewer)\n",
             layers.size(), total, fp32, comp, static_cast<double>(fp32) / static_cast<double>(comp));
}

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}
  void update(int64_t epoch, int64_t step, int64_t steps, double loss, double img_per_s) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (step + 1 < steps && std::chrono::duration<double>(now - last_).count() < 0.2) return;
    last_ = now;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * (step + 1) / steps);
    std::fprintf(stderr, "\r  epoch %lld [%s%s] %lld/%lld  loss %.4f  %.0f img/s ", static_cast<long long>(epoch),
                 std::string(filled, '=').c_str(), std::string(kWidth - filled, ' ').c_str(),
                 static_cast<long long>(step + 1), static_cast<long long>(steps), loss, img_per_s);
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_) std::fprintf(stderr, "\r%*s\r", 100, "");
  }

 private:
  bool enabled_;
  Clock::time_point last_{};
};

struct EvalResult {
  double loss = 0, acc = 0;
};

EvalResult evaluate(Model& model, const Dataset& test, HostCommunicator& comm, int64_t eval_batch,
                    const at::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  double sums[3] = {0, 0, 0};  // loss sum, correct, count
  std::vector<int64_t> idx;
  for (int64_t i = comm.rank(); i < test.size(); i += comm.size()) idx.push_back(i);
  for (std::size_t b = 0; b < idx.size(); b += eval_batch) {
    const std::size_t n = std::min<std::size_t>(eval_batch, idx.size() - b);
    Batch batch = make_batch(test, Span<const int64_t>(idx.data() + b, n));
    batch.labels = batch.labels.to(device);
    at::Tensor logits = model.forward(batch.images.to(device));
    sums[0] += torch::nn::functional::cross_entropy(
                   logits, batch.labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
    sums[1] += logits.argmax(1).eq(batch.labels).sum().item<double>();
    sums[2] += static_cast<double>(n);
  }
  comm.allreduce_sum(Span<double>(sums, 3));
  model.train();
  return {sums[0] / sums[2], sums[1] / sums[2]};
}

}  // namespace

TrainResult run_training(const TrainOptions& o, std::shared_ptr<HostCommunicator> control) {
  HostCommunicator& comm = *control;
  const bool root = comm.rank() == 0;
  const int world = comm.size();
  if (o.threads > 0) at::set_num_threads(o.threads);
  if (o.describe) {
    if (root) print_description(o);
    return {};
  }

  // ---- Set-up. Any rank's failure is everyone's (no rank is left in a collective).
  DataSplit data;
  std::shared_ptr<Model> model;
  std::unique_ptr<DistributedOptimizer> opt;
  MetricsWriter metrics;
  std::string setup_error;
  bool usage_error = false;
  try {
    if (o.dataset == "fashion-mnist")
      data = load_fashion_mnist(o.data_dir);
    else if (o.dataset == "cifar10")
      data = load_cifar10(o.data_dir);
    else if (o.dataset == "cifar100")
      data = load_cifar100(o.data_dir);
    else
      data = make_synthetic(o.synthetic_train, o.synthetic_test, 1, 28, 28, o.num_classes > 0 ? o.num_classes : 10,
                            o.seed);
    if (o.num_classes > 0 && o.num_classes < data.train.num_classes)
      throw UsageError(fmt::format("--num-classes {} is less than the {} classes of {}", o.num_classes,
                                   data.train.num_classes, data.train.name));
    if (root && !o.metrics_out.empty()) metrics = MetricsWriter(o.metrics_out);
  } catch (const UsageError& e) {
    setup_error = e.what();
    usage_error = true;
  } catch (const InputError& e) {
    setup_error = e.what();
  }
  if (const std::string e = first_error(comm, setup_error); !e.empty()) {
    if (usage_error) throw UsageError(e);
    throw InputError(e);
  }

  torch::manual_seed(o.seed);
  ModelSpec spec{data.train.channels(), data.train.height(), data.train.width(),
                 o.num_classes > 0 ? o.num_classes : data.train.num_classes};
  const bool augment = o.augment == "on" || (o.augment == "auto" && data.train.name.rfind("cifar", 0) == 0);
  model = make_model(o.model, spec);
  broadcast_model(*model, comm);

  // The data plane: MPI (host memory) or NCCL on this rank's GPU.
  at::Device device(at::kCPU);
  TransportOptions transport;
  transport.transport = o.backend == "nccl" ? Transport::kNccl : Transport::kMpi;
  transport.timeout_s = o.comm_timeout_s;
  if (transport.transport == Transport::kNccl) {
    if (!torch::cuda::is_available())
      throw UsageError("--backend nccl: this LibTorch has no CUDA support or no GPU is visible");
    device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(mpi_local_rank()));
  }
  std::shared_ptr<Communicator> data_plane = make_data_communicator(comm, transport);
  model->to(device);

  OptimizerConfig cfg;
  cfg.kind = parse_optimizer(o.optimizer);
  cfg.lr = effective_lr(o, world);
  cfg.momentum = o.momentum;
  cfg.weight_decay = o.weight_decay;
  cfg.on_nonfinite = o.on_nonfinite == "abort" ? NonFinitePolicy::kAbort : NonFinitePolicy::kSkip;
  if (o.isa != "auto") cfg.isa = codec::parse_isa(o.isa);  // a UsageError if this CPU lacks it
  cfg.exchange = parse_exchange(o.exchange);
  cfg.overlap = o.overlap;
  cfg.bucket_bytes = static_cast<int64_t>(o.bucket_mb * (1 << 20));
  if (o.overlap && o.backend == "mpi" && !mpi_serialized_threads())
    throw UsageError("--overlap: this MPI library does not provide MPI_THREAD_SERIALIZED, which the communication "
                     "thread needs");
  const double base_lr = cfg.lr;
  opt = make_optimizer(model->parameters(), data_plane, control, cfg);
  const LayerTable& table = opt->layers();

  // ---- Checkpoint contents and resume.
  NamedTensors ckpt_tensors;
  for (const auto& p : model->named_parameters()) ckpt_tensors.emplace_back("param." + p.key(), p.value());
  for (const auto& b : model->named_buffers()) ckpt_tensors.emplace_back("buffer." + b.key(), b.value());
  for (auto& [name, t] : opt->state_tensors()) ckpt_tensors.emplace_back("opt." + name, t);
  CheckpointHeader ckpt;
  ckpt.world_size = world;
  ckpt.rank = comm.rank();
  ckpt.layout_hash = table.hash();
  ckpt.seed = o.seed;
  ckpt.model = o.model;
  // The exchange is part of the optimizer's state (two-phase keeps a server error);
  // --overlap changes no bit, so a run may resume with or without it.
  ckpt.optimizer = o.exchange == "allgather" ? o.optimizer : o.optimizer + "/" + o.exchange;
  int64_t start_epoch = 1, start_step = 0, resumed_global_step = 0;
  if (o.resume) {
    std::string err;
    try {
      const CheckpointHeader h = load_checkpoint(o.checkpoint_dir, ckpt, ckpt_tensors);
      start_epoch = h.epoch;
      start_step = h.step;
      resumed_global_step = h.global_step;
    } catch (const InputError& e) {
      err = e.what();
    }
    if (const std::string e = first_error(comm, err); !e.empty()) throw InputError(e);
    if (root) fmt::print("  resumed from {}: epoch {}, {} steps done in it, {} in total\n", o.checkpoint_dir,
                         start_epoch, start_step, resumed_global_step);
  }
  auto save = [&](int64_t epoch, int64_t step_in_epoch, int64_t done) {
    ckpt.epoch = epoch;
    ckpt.step = step_in_epoch;
    ckpt.global_step = done;
    std::string err;
    try {
      save_checkpoint(o.checkpoint_dir, ckpt, ckpt_tensors);
    } catch (const InputError& e) {
      err = e.what();
    }
    if (const std::string e = first_error(comm, err); !e.empty()) throw InputError(e);
    if (root) write_manifest(o.checkpoint_dir, ckpt);  // last: every rank file is durable
  };

  EpochSharder sharder(data.train.size(), world, comm.rank(), o.batch_size, o.seed);
  const int64_t steps = o.steps_per_epoch > 0 ? std::min(o.steps_per_epoch, sharder.steps_per_epoch())
                                              : sharder.steps_per_epoch();
  const bool progress = root && (o.progress == "on" || (o.progress == "auto" && isatty(STDERR_FILENO)));

  if (root) {
    fmt::print("efsign-train: {} ranks, backend {} on {}, optimizer {} (lr {}), model {} ({}), codec {}\n", world,
               data_plane->backend(), device.str(), o.optimizer, cfg.lr, o.model, table.describe(),
               opt->codec().describe());
    const double fp32_wire = static_cast<double>(ring_allreduce_wire_bytes(table.fp32_bytes(), world));
    const double wire = static_cast<double>(opt->wire_bytes_per_step());
    fmt::print("  exchange: {}; hands {} per rank per step to the network layer (fp32: {}); puts {} on the wire "
               "vs {} for an fp32 ring allreduce ({}; ring model)\n",
               opt->exchange_name(), human_bytes(static_cast<double>(opt->handed_bytes_per_step())),
               human_bytes(static_cast<double>(table.fp32_bytes())), human_bytes(wire), human_bytes(fp32_wire),
               wire > 0 ? fmt::format("{:.1f}x fewer", fp32_wire / wire) : std::string("W = 1: nothing"));
    fmt::print("  data: {} ({} train, {} test), {} steps/epoch of {} x {} images\n", data.train.name,
               data.train.size(), data.test.size(), steps, world, o.batch_size);
    if (augment) fmt::print("  augmentation: random 32x32 crop of the 4-pixel zero-padded image + horizontal flip\n");
    std::fflush(stdout);
  }

  TrainResult result;
  double total_bytes = 0, total_wire = 0, total_steps = 0, total_train_s = 0, total_images = 0;
  const auto run_start = Clock::now();
  int64_t global_step = resumed_global_step;
  bool stopped = false;
  for (int64_t epoch = start_epoch; epoch <= o.epochs && !stopped; ++epoch) {
    double lr = base_lr;
    for (int64_t m : o.lr_milestones) {
      if (epoch > m) lr *= o.lr_gamma;
      if (epoch == m + 1 && o.reset_state_at_milestones) {
        opt->reset_state();
        if (root) fmt::print("  milestone {}: optimizer state (error feedback, momentum) reset\n", m);
      }
    }
    opt->set_lr(lr);
    model->train();
    ProgressBar bar(progress);
    double sums[2] = {0, 0};  // loss * n, correct
    int64_t skipped = 0;
    double images = 0, fwd_bwd_ms = 0, compress_ms = 0, comm_ms = 0, update_ms = 0, wait_ms = 0, epoch_bytes = 0,
           epoch_wire = 0;
    const auto t0 = Clock::now();
    const int64_t first_step = epoch == start_epoch ? start_step : 0;
    const int64_t first_global = global_step;
    for (int64_t step = first_step; step < steps; ++step) {
      const std::vector<int64_t> idx = sharder.batch(epoch - 1, step);
      Batch batch;
      {
        at::Tensor ix = at::from_blob(const_cast<int64_t*>(idx.data()), {static_cast<int64_t>(idx.size())},
                                      at::TensorOptions().dtype(at::kLong));
        at::Tensor u8 = data.train.images.index_select(0, ix);
        if (augment)  // a seed per (run, epoch, step, rank): reproducible and different everywhere
          u8 = augment_crop_flip(u8, SplitMix64(o.seed ^ (static_cast<uint64_t>(epoch) << 40) ^
                                                (static_cast<uint64_t>(step) << 16) ^ comm.rank())
                                         .next());
        batch = {normalize_images(data.train, u8), data.train.labels.index_select(0, ix)};
      }
      batch.images = batch.images.to(device);
      batch.labels = batch.labels.to(device);
      const auto tf = Clock::now();
      model->zero_grad();
      at::Tensor logits = model->forward(batch.images);
      at::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.labels);
      loss.backward();
      fwd_bwd_ms += seconds_since(tf) * 1e3;
      opt->step();
      ++global_step;
      maybe_diverge_for_test(*model, comm.rank(), global_step, /*at_end=*/false);
      if (o.check_every > 0 && global_step % o.check_every == 0) {
        // Parameters only: BatchNorm statistics are rank-local until the epoch ends.
        try {
          agree_or_throw(comm, model_checksum(*model, /*with_buffers=*/false),
                         fmt::format("the parameter checksum after step {} (replicas diverged)", global_step));
        } catch (const AgreedError& e) {
          if (root) metrics.write(JsonLine().add("event", "error").add("step", global_step).add("message", e.what()));
          throw;
        }
      }
      const StepStats& st = opt->last_step();
      if (st.skipped) {
        ++skipped;
        if (root) {
          fmt::print(stderr, "\n  step {} skipped on every rank: {}\n", global_step, st.skip_reason);
          metrics.write(JsonLine().add("event", "skipped_step").add("step", global_step).add("reason", st.skip_reason));
        }
      }
      compress_ms += st.compress_ms;
      comm_ms += st.comm_ms;
      update_ms += st.update_ms;
      wait_ms += st.wait_ms;
      epoch_bytes += static_cast<double>(st.bytes_sent);
      epoch_wire += static_cast<double>(st.wire_bytes);
      // Not at an epoch's last step: the epoch-end checkpoint (after BN averaging) follows.
      if (!o.checkpoint_dir.empty() && o.checkpoint_every > 0 && global_step % o.checkpoint_every == 0 &&
          step + 1 < steps)
        save(epoch, step + 1, global_step);
      const double n = static_cast<double>(idx.size());
      sums[0] += loss.item<double>() * n;
      sums[1] += logits.argmax(1).eq(batch.labels).sum().item<double>();
      images += n;
      bar.update(epoch, step, steps, sums[0] / images, images * world / seconds_since(t0));
      if (o.max_steps > 0 && global_step >= o.max_steps && step + 1 < steps) {
        if (!o.checkpoint_dir.empty()) save(epoch, step + 1, global_step);
        if (root) fmt::print("  stopped after {} steps (--max-steps), mid-epoch {}\n", global_step, epoch);
        stopped = true;
        break;
      }
    }
    const double train_s = seconds_since(t0);
    const int64_t done = std::max<int64_t>(1, (stopped ? global_step - first_global : steps - first_step));
    bar.finish();
    double agg[3] = {sums[0], sums[1], images};
    comm.allreduce_sum(Span<double>(agg, 3));
    average_buffers(*model, comm);
    const EvalResult ev = evaluate(*model, data.test, comm, o.eval_batch, device);
    const double step_ms = train_s * 1e3 / static_cast<double>(done);
    const double img_s = agg[2] / train_s;
    const double bytes_per_step = epoch_bytes / static_cast<double>(done);
    total_bytes += epoch_bytes;
    total_wire += epoch_wire;
    total_steps += static_cast<double>(done);
    total_train_s += train_s;
    total_images += agg[2];
    result.test_acc = ev.acc;
    result.test_loss = ev.loss;
    if (root) {
      fmt::print("epoch {:>3}  lr {:<8.4g} train loss {:.4f} acc {:6.2f}%  test loss {:.4f} acc {:6.2f}%  "
                 "{:7.0f} img/s  {:6.1f} ms/step  {}/step sent\n",
                 epoch, lr, agg[0] / agg[2], 100 * agg[1] / agg[2], ev.loss, 100 * ev.acc, img_s, step_ms,
                 human_bytes(bytes_per_step));
      std::fflush(stdout);
      metrics.write(JsonLine()
                        .add("event", "epoch")
                        .add("epoch", epoch)
                        .add("lr", lr)
                        .add("train_loss", agg[0] / agg[2])
                        .add("train_acc", agg[1] / agg[2])
                        .add("test_loss", ev.loss)
                        .add("test_acc", ev.acc)
                        .add("images_per_sec", img_s)
                        .add("step_time_ms", step_ms)
                        .add("fwd_bwd_ms", fwd_bwd_ms / done)
                        .add("compress_ms", compress_ms / done)
                        .add("comm_ms", comm_ms / done)
                        .add("update_ms", update_ms / done)
                        .add("wait_ms", wait_ms / done)
                        .add("bytes_sent_per_step", bytes_per_step)
                        .add("wire_bytes_per_step", epoch_wire / static_cast<double>(done))
                        .add("steps", done)
                        .add("skipped_steps", skipped));
    }
    if (!stopped && !o.checkpoint_dir.empty()) save(epoch + 1, 0, global_step);
    if (!stopped && o.max_steps > 0 && global_step >= o.max_steps && epoch < o.epochs) {
      if (root) fmt::print("  stopped after {} steps (--max-steps), at the end of epoch {}\n", global_step, epoch);
      stopped = true;
    }
  }

  // ---- Every replica must hold the same bytes.
  maybe_diverge_for_test(*model, comm.rank(), global_step, /*at_end=*/true);
  const uint64_t sum = model_checksum(*model, /*with_buffers=*/true);
  try {
    agree_or_throw(comm, sum, "the parameter checksum after training (replicas diverged)");
  } catch (const AgreedError& e) {
    if (root) metrics.write(JsonLine().add("event", "error").add("message", e.what()));
    throw;
  }
  result.param_checksum = hex64(sum);
  result.bytes_sent_per_step = total_bytes / total_steps;
  result.wire_bytes_per_step = total_wire / total_steps;
  result.fp32_bytes_per_step = table.fp32_bytes();
  if (root) {
    fmt::print("done: test acc {:.2f}%, {} sent per rank per step ({:.1f}x fewer than fp32; on the wire {} vs {} for "
               "an fp32 ring allreduce), all {} replicas identical (checksum {}), {:.1f} s\n",
               100 * result.test_acc, human_bytes(result.bytes_sent_per_step),
               static_cast<double>(result.fp32_bytes_per_step) / result.bytes_sent_per_step,
               human_bytes(result.wire_bytes_per_step),
               human_bytes(static_cast<double>(ring_allreduce_wire_bytes(table.fp32_bytes(), world))), world,
               result.param_checksum, seconds_since(run_start));
    metrics.write(JsonLine()
                      .add("event", "summary")
                      .add("world_size", world)
                      .add("backend", data_plane->backend())
                      .add("optimizer", o.optimizer)
                      .add("exchange", o.optimizer == "sgdm" ? std::string("allreduce") : o.exchange)
                      .add("overlap", o.overlap)
                      .add("model", o.model)
                      .add("dataset", data.train.name)
                      .add("epochs", o.epochs)
                      .add("batch_size", o.batch_size)
                      .add("lr", base_lr)
                      .add("num_params", table.total_elements())
                      .add("num_layers", table.num_layers())
                      .add("test_acc", result.test_acc)
                      .add("test_loss", result.test_loss)
                      .add("bytes_sent_per_step", result.bytes_sent_per_step)
                      .add("fp32_bytes_per_step", result.fp32_bytes_per_step)
                      .add("wire_bytes_per_step", result.wire_bytes_per_step)
                      .add("fp32_ring_wire_bytes_per_step", ring_allreduce_wire_bytes(table.fp32_bytes(), world))
                      .add("compression_ratio", static_cast<double>(result.fp32_bytes_per_step) /
                                                    result.bytes_sent_per_step)
                      .add("step_time_ms", total_train_s * 1e3 / total_steps)
                      .add("images_per_sec", total_images / total_train_s)
                      .add("train_time_s", total_train_s)
                      .add("param_checksum", result.param_checksum)
                      .add("global_steps", global_step)
                      .add("stopped_early", stopped));
  }
  return result;
}

}  // namespace efsign
