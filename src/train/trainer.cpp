// run_training: set-up agreed across ranks, then the epoch loop. The pieces live in
// their own units: options.cpp (flags), checkpoint.cpp (generations), meter.cpp
// (epoch sums, progress), evaluate.cpp, batches.cpp, ddp.cpp (replica glue).
#include "efsign/trainer.h"

#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "efsign/checkpoint.h"
#include "efsign/checksum.h"
#include "efsign/data.h"
#include "efsign/ddp.h"
#include "efsign/error.h"
#include "efsign/metrics.h"
#include "efsign/models.h"
#include "efsign/mpi_communicator.h"
#include "efsign/safetensors.h"
#include "train_internal.h"
#include "../util/durable_file.h"

namespace efsign {
namespace {

using detail::Clock;
using detail::human_bytes;
using detail::seconds_since;

bool is_cifar(DatasetKind d) { return d == DatasetKind::kCifar10 || d == DatasetKind::kCifar100; }

ModelSpec spec_for(const TrainOptions& o) {
  const bool cifar = is_cifar(o.dataset);
  ModelSpec spec{cifar ? 3 : 1, cifar ? 32 : 28, cifar ? 32 : 28, o.dataset == DatasetKind::kCifar100 ? 100 : 10};
  if (o.num_classes > 0) spec.num_classes = o.num_classes;
  return spec;
}

// Runs `fn` on every rank; a UsageError or InputError on any rank (a file missing on
// one node) becomes the same exception on every rank, so no rank is left waiting in
// a collective.
template <typename Fn>
void agreed(HostCommunicator& comm, Fn&& fn) {
  std::string err;
  try {
    fn();
  } catch (const UsageError& e) {
    err = std::string("U") + e.what();
  } catch (const InputError& e) {
    err = std::string("I") + e.what();
  }
  std::string e = first_error(comm, err);
  if (e.empty()) return;
  // The kind letter follows first_error's "rank R: " prefix (rank R != 0 failed first).
  const std::size_t kind = e.compare(0, 5, "rank ") == 0 ? e.find(": ") + 2 : 0;
  const bool usage = e[kind] == 'U';
  e.erase(kind, 1);
  if (usage) throw UsageError(e);
  throw InputError(e);
}

DataSplit load_data(const TrainOptions& o) {
  switch (o.dataset) {
    case DatasetKind::kFashionMnist: return load_fashion_mnist(o.data_dir);
    case DatasetKind::kCifar10: return load_cifar10(o.data_dir);
    case DatasetKind::kCifar100: return load_cifar100(o.data_dir);
    case DatasetKind::kSynthetic:
      return make_synthetic(o.synthetic_train, o.synthetic_test, 1, 28, 28, o.num_classes > 0 ? o.num_classes : 10,
                            o.seed);
  }
  throw Error("load_data: unknown DatasetKind");
}

// --global-batch (or the preset's) fixes the global batch and the per-rank share;
// otherwise --batch-size is per rank.
int64_t batch_per_rank(const TrainOptions& o, int world) {
  if (o.global_batch == 0) return o.batch_size;
  if (o.global_batch % world != 0)
    throw UsageError(fmt::format("the global batch {}{} is not divisible by {} ranks: run a number of ranks that "
                                 "divides it, or give --batch-size per rank",
                                 o.global_batch, o.preset.empty() ? "" : " (the paper's, --preset " + o.preset + ")",
                                 world));
  return o.global_batch / world;
}

// The GPU of this rank: one per rank for NCCL (the local rank); with MPI, ranks may
// share the GPUs of their host.
int pick_gpu(const TrainOptions& o) {
  if (!torch::cuda::is_available())
    throw UsageError("--device cuda: this LibTorch has no CUDA support or no GPU is visible");
  const int count = static_cast<int>(torch::cuda::device_count());
  const int local = mpi_local_rank();
  if (o.comm == Transport::kNccl) {
    if (local >= count)
      throw UsageError(fmt::format("--comm nccl needs one GPU per rank: local rank {} but {} GPU(s) on this host "
                                   "(share GPUs with --comm mpi)", local, count));
    return local;
  }
  return local % count;
}

// Collective (it asks MPI how many ranks share this host); rank 0 prints.
void warn_if_oversubscribed(const TrainOptions& o, bool root) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int per_host = mpi_local_size();
  if (!root) return;
  const int threads = o.threads > 0 ? o.threads : at::get_num_threads();
  if (cores > 0 && threads * per_host > cores)
    fmt::print(stderr, "efsign-train: warning: {} ranks on this host x {} threads = {} threads on {} cores; expect "
                       "the run to be much slower (--threads {} would fit)\n",
               per_host, threads, threads * per_host, cores, std::max(1, cores / per_host));
}

}  // namespace

TrainResult run_training(const TrainOptions& o, std::shared_ptr<HostCommunicator> control, const TrainHooks& hooks) {
  HostCommunicator& comm = *control;
  const bool root = comm.rank() == 0;
  const int world = comm.size();
  TrainResult result;
  if (o.threads > 0) at::set_num_threads(o.threads);
  if (o.describe) {
    if (root) detail::print_description(o, spec_for(o));
    return result;
  }
  agree_or_throw(comm, o.agreement_hash(), "the training options (every rank must be given the same flags)");
  warn_if_oversubscribed(o, root);

  // ---- Set-up. Any rank's failure is everyone's.
  DataSplit data;
  int64_t per_rank = 0;
  agreed(comm, [&] {
    data = load_data(o);
    if (o.num_classes > 0 && o.num_classes < data.train.num_classes)
      throw UsageError(fmt::format("--num-classes {} is less than the {} classes of {}", o.num_classes,
                                   data.train.num_classes, data.train.name));
    per_rank = batch_per_rank(o, world);
  });
  at::Device device(at::kCPU);
  if (o.device == DeviceKind::kCuda) {
    agreed(comm, [&] { device = at::Device(at::kCUDA, pick_gpu(o)); });
    // Reproducible convolutions: a fixed cuDNN algorithm (no autotuning, no
    // non-deterministic kernels), so that a run, a resumed run and an --overlap run of
    // the same configuration give the same bits (cuBLAS: CUBLAS_WORKSPACE_CONFIG).
    at::globalContext().setBenchmarkCuDNN(false);
    at::globalContext().setDeterministicCuDNN(true);
  }
  const bool augment = o.augment == Switch::kOn || (o.augment == Switch::kAuto && is_cifar(o.dataset));
  detail::BatchSource batches(data.train, world, comm.rank(), per_rank, o.seed, augment, device);
  const int64_t steps = o.steps_per_epoch > 0 ? std::min(o.steps_per_epoch, batches.steps_per_epoch())
                                              : batches.steps_per_epoch();
  const int64_t global_batch = per_rank * world;

  torch::manual_seed(o.seed);
  ModelSpec spec{data.train.channels(), data.train.height(), data.train.width(),
                 o.num_classes > 0 ? o.num_classes : data.train.num_classes};
  std::shared_ptr<Model> model = make_model(o.model, spec);
  broadcast_parameters(*model, comm);
  model->to(device);
  const std::shared_ptr<Communicator> data_plane =
      make_data_communicator(comm, TransportOptions{o.comm, device.is_cuda() ? device.index() : -1, o.comm_timeout_s});
  const double base = base_lr(o, global_batch);
  OptimizerConfig cfg;
  cfg.kind = o.optimizer;
  cfg.lr = scheduled_lr(o, base, 1, 0, steps);
  cfg.momentum = o.momentum;
  cfg.weight_decay = o.weight_decay;
  cfg.on_nonfinite = o.on_nonfinite;
  cfg.isa = o.isa;
  cfg.exchange = o.exchange;
  cfg.bucket_bytes = static_cast<int64_t>(o.bucket_mb * (1 << 20));
  {
    std::vector<int64_t> sizes;
    for (const auto& p : model->parameters()) sizes.push_back(p.numel());
    const bool several_buckets = make_buckets(LayerTable(sizes), cfg.bucket_bytes).size() > 1;
    cfg.overlap = o.overlap == Switch::kOn || (o.overlap == Switch::kAuto && several_buckets);
  }
  if (cfg.overlap && o.comm == Transport::kMpi && !mpi_serialized_threads()) {
    if (o.overlap == Switch::kOn)
      throw UsageError("--overlap: this MPI library does not provide MPI_THREAD_SERIALIZED, which the communication "
                       "thread needs");
    cfg.overlap = false;  // auto: not here
  }
  std::unique_ptr<DistributedOptimizer> opt = make_optimizer(model->parameters(), data_plane, control, cfg);
  const LayerTable& table = opt->layers();

  // ---- Checkpoints (Note [checkpoint generations]) and the position to start from.
  NamedTensors ckpt_tensors;
  for (const auto& p : model->named_parameters()) ckpt_tensors.emplace_back("param." + p.key(), p.value());
  for (const auto& b : model->named_buffers()) ckpt_tensors.emplace_back("buffer." + b.key(), b.value());
  for (auto& [name, t] : opt->state_tensors()) ckpt_tensors.emplace_back("opt." + name, t);
  CheckpointHeader header;
  header.world_size = world;
  header.rank = comm.rank();
  header.layout_hash = table.hash();
  header.seed = o.seed;
  header.model = o.model;
  // The exchange is part of the optimizer's state (two-phase keeps a server error);
  // --overlap changes no bit, so a run may resume with or without it.
  header.optimizer = optimizer_name(o.optimizer) +
                     (o.exchange == ExchangeKind::kAllgather ? "" : "/" + exchange_kind_name(o.exchange));
  header.batch_size = per_rank;
  // With its size: --synthetic-train changes the data but not the name.
  header.dataset = fmt::format("{} ({} training images)", data.train.name, data.train.size());
  header.threads = o.threads;
  std::optional<Checkpointer> ckpt;
  int64_t start_epoch = 1, start_step = 0, global_step = 0;
  bool threads_changed = false;
  if (!o.checkpoint_dir.empty()) {
    ckpt.emplace(o.checkpoint_dir, comm, o.keep_checkpoints);
    ckpt->start(o.resume, o.overwrite_checkpoint);
    if (o.resume) {
      const CheckpointHeader h = ckpt->load(header, ckpt_tensors, &threads_changed);
      start_epoch = h.epoch;
      start_step = h.step;
      global_step = h.global_step;
      if (root) fmt::print("  resumed from {}: epoch {}, {} steps done in it, {} in total\n", o.checkpoint_dir,
                           start_epoch, start_step, global_step);
      if (root && threads_changed)
        fmt::print(stderr, "efsign-train: warning: the checkpoint was written with another --threads; the resumed run "
                           "is not bit-identical to an uninterrupted one\n");
    }
  }
  if (start_epoch > o.epochs || (o.max_steps > 0 && global_step >= o.max_steps)) {
    if (root)
      fmt::print("efsign-train: the run in {} is already complete ({} steps, {} of {} epochs{}); nothing to do\n",
                 o.checkpoint_dir, global_step, start_epoch - 1, o.epochs,
                 o.max_steps > 0 ? fmt::format(", --max-steps {}", o.max_steps) : std::string());
    result.already_complete = true;
    result.steps = global_step;
    return result;
  }

  // A model file that cannot be written is found now, not after the run.
  if (!o.save_model.empty())
    agreed(comm, [&] {
      if (!root) return;
      try {
        detail::probe_writable(detail::parent_of(o.save_model), "model");
      } catch (const InputError& e) {
        throw InputError(fmt::format("--save-model {}: {}", o.save_model, e.what()));
      }
    });
  MetricsWriter metrics;
  agreed(comm, [&] {
    if (root && !o.metrics_out.empty()) metrics = MetricsWriter(o.metrics_out, /*append=*/o.resume);
  });
  // Metrics are written on rank 0 only; a failed write reaches every rank at the next
  // agreement point (the epoch's end), so that no rank is left waiting.
  std::string metrics_error;
  auto record = [&](const JsonLine& line) {
    if (!root || !metrics_error.empty()) return;
    try {
      metrics.write(line);
    } catch (const InputError& e) {
      metrics_error = e.what();
    }
  };
  auto agree_metrics = [&] { agreed(comm, [&] { if (!metrics_error.empty()) throw InputError(metrics_error); }); };
  if (o.resume)
    record(JsonLine()
               .add("event", "resumed")
               .add("epoch", start_epoch)
               .add("step", start_step)
               .add("global_step", global_step)
               .add("bit_identical", !threads_changed));

  const bool progress = root && (o.progress == Switch::kOn || (o.progress == Switch::kAuto && isatty(STDERR_FILENO)));
  if (root) {
    fmt::print("efsign-train: {} ranks, {} on {}, optimizer {} (lr {}), model {} ({}), codec {}\n", world,
               data_plane->backend(), device.str(), optimizer_name(o.optimizer), base, o.model, table.describe(),
               opt->codec().describe());
    const double fp32_wire = static_cast<double>(ring_allreduce_wire_bytes(table.fp32_bytes(), world));
    const double wire = static_cast<double>(opt->wire_bytes_per_step());
    fmt::print("  exchange: {}; hands {} per rank per step to the network layer (fp32: {}); puts {} on the wire "
               "vs {} for an fp32 ring allreduce ({}; ring model)\n",
               opt->exchange_name(), human_bytes(static_cast<double>(opt->handed_bytes_per_step())),
               human_bytes(static_cast<double>(table.fp32_bytes())), human_bytes(wire), human_bytes(fp32_wire),
               wire > 0 ? fmt::format("{:.1f}x fewer", fp32_wire / wire) : std::string("W = 1: nothing"));
    const int64_t first = batches.batch_per_rank(0, 0);
    fmt::print("  data: {} ({} train, {} test), {} steps/epoch of {} x {} images{}\n", data.train.name,
               data.train.size(), data.test.size(), steps, world, first,
               first < per_rank ? fmt::format(" (the batch of {} per rank is more than each rank's share of the "
                                              "data: {} is used)", per_rank, first)
                                : std::string());
    if (augment) fmt::print("  augmentation: random 32x32 crop of the 4-pixel zero-padded image + horizontal flip\n");
    std::fflush(stdout);
  }

  // ---- The loop.
  detail::RunTotals totals;
  const auto run_start = Clock::now();
  int64_t consecutive_skips = 0;
  bool stopped = false;
  for (int64_t epoch = start_epoch; epoch <= o.epochs && !stopped; ++epoch) {
    const int64_t first_step = epoch == start_epoch ? start_step : 0;
    if (first_step == 0 && o.reset_state_at_milestones)  // at the epoch's start only: a resume mid-epoch keeps it
      for (int64_t m : o.lr_milestones)
        if (epoch == m + 1) {
          opt->reset_state();
          if (root) fmt::print("  milestone {}: optimizer state (error feedback, momentum) reset\n", m);
        }
    model->train();
    detail::ProgressBar bar(progress);
    detail::EpochMeter meter;
    double lr = scheduled_lr(o, base, epoch, first_step, steps);
    for (int64_t step = first_step; step < steps; ++step) {
      lr = scheduled_lr(o, base, epoch, step, steps);
      opt->set_lr(lr);
      const Batch batch = batches.get(epoch, step);
      const auto tf = Clock::now();
      model->zero_grad();
      const at::Tensor logits = model->forward(batch.images);
      const at::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.labels);
      loss.backward();
      const double fwd_bwd_ms = seconds_since(tf) * 1e3;
      opt->step();
      ++global_step;
      if (hooks.after_step) hooks.after_step(*model, global_step);
      if (o.check_every > 0 && global_step % o.check_every == 0) {
        try {  // parameters only: BatchNorm statistics are rank-local until the epoch ends
          check_replicas(*model, comm, /*with_buffers=*/false, fmt::format("after step {}", global_step));
        } catch (const AgreedError& e) {
          record(JsonLine().add("event", "error").add("step", global_step).add("message", e.what()));
          throw;
        }
      }
      const StepStats& st = opt->last_step();
      if (st.skipped) {
        ++consecutive_skips;
        if (root) fmt::print(stderr, "\n  step {} skipped on every rank: {}\n", global_step, st.skip_reason);
        record(JsonLine().add("event", "skipped_step").add("step", global_step).add("reason", st.skip_reason));
        if (o.max_skipped_steps > 0 && consecutive_skips >= o.max_skipped_steps)
          throw AgreedError(fmt::format("{} consecutive steps skipped (the last, step {}: {}); the run is not "
                                        "training: lower --lr, or raise --max-skipped-steps",
                                        consecutive_skips, global_step, st.skip_reason));
      } else {
        consecutive_skips = 0;
      }
      meter.add_step(st, fwd_bwd_ms, loss.item<double>(), logits.argmax(1).eq(batch.labels).sum().item<double>(),
                     batch.labels.size(0));
      bar.update(epoch, step, steps, meter.local_loss(), meter.images() * world / meter.seconds());
      const bool last_of_epoch = step + 1 == steps;  // the epoch-end checkpoint (after BN averaging) follows
      bool saved = false;
      if (ckpt && o.checkpoint_every > 0 && global_step % o.checkpoint_every == 0 && !last_of_epoch) {
        header.epoch = epoch, header.step = step + 1, header.global_step = global_step;
        ckpt->save(header, ckpt_tensors);
        saved = true;
      }
      if (o.max_steps > 0 && global_step >= o.max_steps && !last_of_epoch) {
        if (ckpt && !saved) {  // once per step: a second copy would push an older generation out of --keep
          header.epoch = epoch, header.step = step + 1, header.global_step = global_step;
          ckpt->save(header, ckpt_tensors);
        }
        if (root) fmt::print("  stopped after {} steps (--max-steps), mid-epoch {}\n", global_step, epoch);
        stopped = true;
        break;
      }
    }
    bar.finish();
    meter.finish(comm);
    // The epoch's training time ends here: step times, images/s and the run's totals do
    // not count the BatchNorm averaging and the test-set evaluation that follow.
    const double train_s = meter.seconds();
    totals.add(meter);
    average_buffers(*model, comm);
    const detail::EvalResult ev = detail::evaluate(*model, data.test, comm, o.eval_batch, device);
    result.test_acc = ev.acc;
    result.test_loss = ev.loss;
    const double ms_per_step = meter.per_step(train_s * 1e3);
    const double img_s = meter.global_images() / train_s;
    if (root) {
      const std::string train = meter.steps() > 0 ? fmt::format("train loss {:.4f} acc {:6.2f}%", meter.train_loss(),
                                                                100 * meter.train_acc())
                                                  : fmt::format("no steps left in it after the resume at step {}",
                                                                first_step);
      fmt::print("epoch {:>3}  lr {:<8.4g} {}  test loss {:.4f} acc {:6.2f}%  {:7.0f} img/s  {:6.1f} ms/step  "
                 "{}/step sent{}\n",
                 epoch, lr, train, ev.loss, 100 * ev.acc, img_s, ms_per_step, human_bytes(meter.per_step(meter.bytes)),
                 meter.skipped() ? fmt::format("  ({} steps skipped)", meter.skipped()) : std::string());
      std::fflush(stdout);
    }
    JsonLine line;
    line.add("event", "epoch").add("epoch", epoch).add("lr", lr);
    if (meter.steps() > 0) line.add("train_loss", meter.train_loss()).add("train_acc", meter.train_acc());
    record(line.add("test_loss", ev.loss)
               .add("test_acc", ev.acc)
               .add("images_per_sec", img_s)
               .add("step_time_ms", ms_per_step)
               .add("fwd_bwd_ms", meter.per_step(meter.fwd_bwd_ms))
               .add("compress_ms", meter.per_step(meter.compress_ms))
               .add("comm_ms", meter.per_step(meter.comm_ms))
               .add("update_ms", meter.per_step(meter.update_ms))
               .add("wait_ms", meter.per_step(meter.wait_ms))
               .add("bytes_sent_per_step", meter.per_step(meter.bytes))
               .add("wire_bytes_per_step", meter.per_step(meter.wire))
               .add("steps", meter.steps())
               .add("skipped_steps", meter.skipped()));
    agree_metrics();
    if (!stopped && ckpt) {
      header.epoch = epoch + 1, header.step = 0, header.global_step = global_step;
      ckpt->save(header, ckpt_tensors);
    }
    if (!stopped && o.max_steps > 0 && global_step >= o.max_steps && epoch < o.epochs) {
      if (root) fmt::print("  stopped after {} steps (--max-steps), at the end of epoch {}\n", global_step, epoch);
      stopped = true;
    }
  }

  // ---- Every replica must hold the same bytes.
  if (hooks.before_final_check) hooks.before_final_check(*model);
  uint64_t sum = 0;
  try {
    sum = check_replicas(*model, comm, /*with_buffers=*/true, "after training");
  } catch (const AgreedError& e) {
    record(JsonLine().add("event", "error").add("message", e.what()));
    throw;
  }
  result.param_checksum = hex64(sum);
  result.steps = global_step;
  result.skipped_steps = totals.skipped;
  // Per step over the steps this run took; a run that took none (a resume whose epochs had
  // no step left) reports what one step of this configuration hands over and puts on the wire.
  result.bytes_sent_per_step = totals.steps > 0 ? totals.bytes / totals.steps
                                                : static_cast<double>(opt->handed_bytes_per_step());
  result.wire_bytes_per_step = totals.steps > 0 ? totals.wire / totals.steps
                                                : static_cast<double>(opt->wire_bytes_per_step());
  result.fp32_bytes_per_step = table.fp32_bytes();
  const int64_t fp32_ring = ring_allreduce_wire_bytes(table.fp32_bytes(), world);
  if (root) {
    fmt::print("done: test acc {:.2f}%, {} handed to the network per rank per step ({:.1f}x fewer than fp32); on the "
               "wire {} vs {} for an fp32 ring allreduce ({}), {} steps, {} skipped, all {} replicas identical "
               "(checksum {}), {:.1f} s\n",
               100 * result.test_acc, human_bytes(result.bytes_sent_per_step),
               static_cast<double>(result.fp32_bytes_per_step) / result.bytes_sent_per_step,
               human_bytes(result.wire_bytes_per_step), human_bytes(static_cast<double>(fp32_ring)),
               result.wire_bytes_per_step > 0
                   ? fmt::format("{:.1f}x fewer", static_cast<double>(fp32_ring) / result.wire_bytes_per_step)
                   : std::string("W = 1: nothing on the wire"),
               totals.steps, totals.skipped, world, result.param_checksum, seconds_since(run_start));
    std::fflush(stdout);
  }
  record(JsonLine()
             .add("event", "summary")
             .add("world_size", world)
             .add("backend", data_plane->backend())
             .add("device", device.str())
             .add("optimizer", optimizer_name(o.optimizer))
             .add("exchange", o.optimizer == OptimizerKind::kSgdm ? std::string("allreduce")
                                                                   : exchange_kind_name(o.exchange))
             .add("overlap", cfg.overlap)
             .add("model", o.model)
             .add("dataset", data.train.name)
             .add("epochs", o.epochs)
             .add("batch_size", per_rank)
             .add("global_batch", global_batch)
             .add("lr", base)
             .add("num_params", table.total_elements())
             .add("num_layers", table.num_layers())
             .add("test_acc", result.test_acc)
             .add("test_loss", result.test_loss)
             .add("bytes_sent_per_step", result.bytes_sent_per_step)
             .add("fp32_bytes_per_step", result.fp32_bytes_per_step)
             .add("wire_bytes_per_step", result.wire_bytes_per_step)
             .add("fp32_ring_wire_bytes_per_step", fp32_ring)
             .add("compression_ratio", static_cast<double>(result.fp32_bytes_per_step) / result.bytes_sent_per_step)
             .add("wire_ratio", result.wire_bytes_per_step > 0
                                    ? static_cast<double>(fp32_ring) / result.wire_bytes_per_step
                                    : 0.0)
             .add("step_time_ms", totals.steps > 0 ? totals.seconds * 1e3 / totals.steps : 0.0)
             .add("images_per_sec", totals.seconds > 0 ? totals.images / totals.seconds : 0.0)
             .add("train_time_s", totals.seconds)
             .add("param_checksum", result.param_checksum)
             .add("global_steps", global_step)
             .add("steps_run", static_cast<int64_t>(totals.steps))
             .add("skipped_steps", totals.skipped)
             .add("stopped_early", stopped));
  agree_metrics();
  if (!o.save_model.empty())
    agreed(comm, [&] {
      if (!root) return;
      std::vector<std::pair<std::string, at::Tensor>> named;
      for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
      for (const auto& b : model->named_buffers()) named.emplace_back(b.key(), b.value());
      save_safetensors(o.save_model, named,
                       {{"format", "pt"},
                        {"producer", "efsign-train"},
                        {"model", o.model},
                        {"optimizer", optimizer_name(o.optimizer)},
                        {"param_checksum", result.param_checksum},
                        {"test_acc", fmt::format("{}", result.test_acc)}});
    });
  return result;
}

}  // namespace efsign
