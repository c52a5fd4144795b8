// efsign-train's flags: parsed once into TrainOptions' typed values. Every value is
// read as text and converted here, so that an error names the flag and says what it
// needs ("--seed: '-1' is not a non-negative integer"), never cxxopts' bare
// "Argument '-1' failed to parse".
#include <cxxopts.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "efsign/checksum.h"
#include "efsign/error.h"
#include "efsign/models.h"
#include "efsign/trainer.h"

namespace efsign {

std::string dataset_name(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kFashionMnist: return "fashion-mnist";
    case DatasetKind::kSynthetic: return "synthetic";
    case DatasetKind::kCifar10: return "cifar10";
    case DatasetKind::kCifar100: return "cifar100";
  }
  throw Error("dataset_name: unknown DatasetKind");
}

double default_lr(OptimizerKind optimizer) {
  // Tuned for batch 64 per rank on Fashion-MNIST, 1 epoch, 2-4 ranks (see README).
  switch (optimizer) {
    case OptimizerKind::kSgdm: return 0.05;
    case OptimizerKind::kSignSgd: return 0.1;
    case OptimizerKind::kSignum: return 1e-3;
    case OptimizerKind::kEfSignSgd: return 0.3;
  }
  throw Error("default_lr: unknown OptimizerKind");
}

std::vector<std::string> preset_names() { return {"resnet18-cifar100", "vgg19-cifar10", "convnet-fashion-mnist"}; }

namespace {

// The paper's tuned learning rates at its global batch of 128 (PAPER.md: SGDM 0.01,
// signSGD 0.056, EF-SignSGD 0.056, signum 3.2e-4 for ResNet-18 and 5.6e-5 for VGG-19);
// the Fashion-MNIST preset uses this project's defaults (tuned at 2 x 64 = 128).
double preset_lr(const std::string& preset, OptimizerKind k) {
  if (preset == "convnet-fashion-mnist") return default_lr(k);
  switch (k) {
    case OptimizerKind::kSgdm: return 0.01;
    case OptimizerKind::kSignSgd:
    case OptimizerKind::kEfSignSgd: return 0.056;
    case OptimizerKind::kSignum: return preset == "vgg19-cifar10" ? 5.6e-5 : 3.2e-4;
  }
  throw Error("preset_lr: unknown OptimizerKind");
}

constexpr int64_t kPaperGlobalBatch = 128;

// Converters: `flag` names the option in every message.
int64_t to_int(const std::string& flag, const std::string& text, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError(fmt::format("{}: '{}' is not a whole number", flag, text));
  if (v < lo || v > hi) throw UsageError(fmt::format("{}: {} is out of range [{}, {}]", flag, v, lo, hi));
  return v;
}

uint64_t to_u64(const std::string& flag, const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
    throw UsageError(fmt::format("{}: '{}' is not a non-negative whole number", flag, text));
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
  if (errno == ERANGE) throw UsageError(fmt::format("{}: {} does not fit in 64 bits", flag, text));
  return v;
}

double to_double(const std::string& flag, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') throw UsageError(fmt::format("{}: '{}' is not a number", flag, text));
  if (!std::isfinite(v) || errno == ERANGE) throw UsageError(fmt::format("{}: {} is not a finite number", flag, text));
  return v;
}

std::vector<int64_t> to_int_list(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  if (text.empty()) return out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) throw UsageError(fmt::format("{}: '{}' has an empty item (use e.g. 100,150)", flag, text));
    out.push_back(to_int(flag, item, 1, 1000000));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Switch to_switch(const std::string& flag, const std::string& text) {
  if (text == "auto") return Switch::kAuto;
  if (text == "on") return Switch::kOn;
  if (text == "off") return Switch::kOff;
  throw UsageError(fmt::format("{} must be auto, on or off (got '{}')", flag, text));
}

DatasetKind to_dataset(const std::string& text) {
  for (DatasetKind k : {DatasetKind::kFashionMnist, DatasetKind::kSynthetic, DatasetKind::kCifar10,
                        DatasetKind::kCifar100})
    if (text == dataset_name(k)) return k;
  throw UsageError(fmt::format("unknown dataset '{}' (choose fashion-mnist, synthetic, cifar10 or cifar100)", text));
}

}  // namespace

double base_lr(const TrainOptions& o, int64_t global_batch) {
  if (o.lr) return *o.lr;
  if (o.preset_lr > 0)
    return o.scale_lr ? o.preset_lr * static_cast<double>(global_batch) / kPaperGlobalBatch : o.preset_lr;
  return default_lr(o.optimizer);
}

double scheduled_lr(const TrainOptions& o, double base, int64_t epoch, int64_t step, int64_t steps) {
  double lr = base;
  for (int64_t m : o.lr_milestones)
    if (epoch > m) lr *= o.lr_gamma;
  if (o.warmup_epochs > 0 && epoch <= o.warmup_epochs) {  // linear, from 1/T of lr to lr
    const double t = static_cast<double>((epoch - 1) * steps + step + 1);
    lr *= std::min(1.0, t / static_cast<double>(o.warmup_epochs * steps));
  }
  return lr;
}

uint64_t TrainOptions::agreement_hash() const {
  // Everything that changes what the ranks compute, in a fixed text form; file paths
  // (node-local folders may differ), --progress and the metrics file do not. Whether a
  // checkpoint folder or a model file is given, --keep-checkpoints and
  // --overwrite-checkpoint do: they decide which collectives a rank enters.
  const std::string text = fmt::format(
      "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|"
      "{}|{}|{}|{}",
      optimizer_name(optimizer), model, dataset_name(dataset), num_classes, static_cast<int>(augment),
      static_cast<int>(device), transport_name(comm), comm_timeout_s, exchange_kind_name(exchange), static_cast<int>(overlap), bucket_mb,
      epochs, steps_per_epoch, batch_size, global_batch, lr ? *lr : -1.0, scale_lr, warmup_epochs, momentum,
      weight_decay, fmt::join(lr_milestones, ","), lr_gamma, reset_state_at_milestones, preset, seed, threads,
      synthetic_train, synthetic_test, eval_batch, static_cast<int>(on_nonfinite), max_skipped_steps, check_every,
      checkpoint_every, resume, max_steps, checkpoint_dir.empty(), keep_checkpoints, overwrite_checkpoint,
      save_model.empty());
  return fnv1a_string(text);
}

std::optional<TrainOptions> parse_train_options(int argc, char** argv, std::string* help) {
  TrainOptions o;
  cxxopts::Options spec("efsign-train",
                        "Data-parallel training with 1-bit EF-SignSGD gradient exchange.\n"
                        "Run under mpirun: every rank trains one replica; after backward each\n"
                        "layer's error-corrected gradient is sent as packed sign bits plus one\n"
                        "scale: 32x fewer bytes handed to the network than an fp32 allreduce. On\n"
                        "the wire, the allgather exchange saves 64/W (16x at 4 ranks, nothing at 64);\n"
                        "two-phase saves about 32x at any W.\n\n"
                        "  mpirun -np 2 efsign-train --optimizer ef-signsgd --epochs 1\n");
  spec.set_width(100);
  auto text = [](const char* def) { return cxxopts::value<std::string>()->default_value(def); };
  // clang-format off
  spec.add_options()
    ("optimizer", "sgdm (fp32 allreduce + momentum), signsgd (scaled sign, no error feedback), "
                  "signum (sign of momentum), ef-signsgd (sign with error feedback)", text("ef-signsgd"))
    ("model", "mlp | convnet | resnet18 | vgg19 (the paper's CIFAR variants)", text("convnet"))
    ("dataset", "fashion-mnist | synthetic | cifar10 | cifar100 (official binary format)", text("fashion-mnist"))
    ("data-dir", "directory with the data files (default for fashion-mnist: /usr/share/datasets/fashion-mnist; "
                 "required for cifar)", text(""))
    ("num-classes", "classes of the model's last layer (default: the data set's)", text("0"))
    ("augment", "random 32x32 crop of the 4-pixel zero-padded image + horizontal flip: auto (on for cifar) | on | off",
       text("auto"))
    ("describe", "print the model's per-layer table (shape, parameters, bytes per step fp32 vs compressed) and exit")
    ("device", "cpu | cuda: where the model, its gradients and the codec live (cuda: the GPU of the local rank "
               "with --comm nccl; with --comm mpi several ranks may share one GPU)", text(""))
    ("comm", "mpi | nccl: what moves the gradients (nccl needs --device cuda; mpi with --device cuda goes "
             "through pinned host buffers)", text(""))
    ("backend", "shorthand: mpi = --device cpu --comm mpi; nccl = --device cuda --comm nccl", text(""))
    ("exchange", "how the sign optimizers' messages travel: allgather (every rank gets every message; bytes grow "
                 "with W) | two-phase (compressed all-to-all, average + re-compress with a server-side error "
                 "buffer, compressed allgather: ~2 d/8 bytes per rank for any W) | vote (signSGD/signum with majority "
                 "vote, Bernstein et al. 2019: the allgather's messages, the sign of the sum of signs times the mean "
                 "scale; not with ef-signsgd)", text("allgather"))
    ("overlap", "auto | on | off (--overlap alone: on): encode and exchange gradients in buckets of --bucket-mb on "
                "a communication thread while backward runs; auto = on when the gradient fills more than one bucket. "
                "The same bits as without (sgdm: at 2 ranks; more ranks may sum in another order)",
       cxxopts::value<std::string>()->default_value("auto")->implicit_value("on"))
    ("bucket-mb", "bucket size for --overlap, MiB of fp32 gradient (4: measured faster than 25 for ResNet-18 "
                  "on a 1 Gbit/s link, bench/NETEM.md)", text("4"))
    ("comm-timeout", "seconds any rank may wait in a collective (MPI or NCCL, and set-up) for the others before "
                     "the job is aborted with a message naming the collective and the ranks that did not arrive "
                     "(0 = wait forever)", text("300"))
    ("epochs", "number of epochs", text("1"))
    ("steps-per-epoch", "cap every epoch at N steps (0 = whole epoch), for quick runs", text("0"))
    ("batch-size", "samples per rank per step (global batch = W x this)", text("64"))
    ("global-batch", "samples per step over all ranks (batch per rank = this / W, which must divide it)", text("0"))
    ("lr", "learning rate (default: the preset's, else tuned per optimizer: sgdm 0.05, signsgd 0.1, signum 1e-3, "
           "ef-signsgd 0.3)", text(""))
    ("scale-lr", "multiply the preset's learning rate by global batch / 128 (the paper's batch), with a linear "
                 "warm-up (--warmup-epochs, default 5 with this flag)")
    ("warmup-epochs", "raise the learning rate linearly over the first N epochs", text(""))
    ("momentum", "momentum of sgdm and signum", text("0.9"))
    ("weight-decay", "L2 weight decay, added to the gradient before anything else", text("0"))
    ("lr-milestones", "epochs (comma-separated) after which lr is multiplied by --lr-gamma", text(""))
    ("lr-gamma", "factor applied at each milestone", text("0.1"))
    ("reset-state-at-milestones", "zero the error-feedback and momentum buffers at every milestone, as the "
                                  "paper's reference code does when it restarts")
    ("preset", "the paper's setups: resnet18-cifar100 | vgg19-cifar10 (200 epochs, lr/10 after 100 and 150, "
               "global batch 128 (per rank 128 / W), momentum 0.9, weight decay 5e-4, the paper's tuned lr per "
               "optimizer) | convnet-fashion-mnist; explicit flags override", text(""))
    ("seed", "seed for initialisation, data order and synthetic data", text("42"))
    ("threads", "LibTorch intra-op threads per rank (0 = LibTorch's default)", text("1"))
    ("metrics-out", "write JSON Lines metrics here (rank 0): one record per epoch and a summary; appended to "
                    "when resuming", text(""))
    ("save-model", "write the final parameters and buffers here as safetensors, under PyTorch's state-dict names",
       text(""))
    ("synthetic-train", "training samples of --dataset synthetic", text("8192"))
    ("synthetic-test", "test samples of --dataset synthetic", text("2048"))
    ("progress", "progress bar on stderr: auto (when a terminal) | on | off", text("auto"))
    ("on-nonfinite", "a NaN or Inf gradient on any rank: skip (every rank skips the step, logged and counted) | "
                     "abort (every rank stops with the same message)", text("skip"))
    ("max-skipped-steps", "stop with an error after this many consecutive skipped steps (0 = never)", text("50"))
    ("checkpoint-dir", "write a checkpoint here at the end of every epoch (each rank its own file; a generation "
                       "becomes current only when every rank's file is durable)", text(""))
    ("checkpoint-every", "also write one every N global steps", text("0"))
    ("keep-checkpoints", "checkpoint generations kept", text("2"))
    ("resume", "continue from the checkpoint in --checkpoint-dir (same world size, model, optimizer, batch size, "
               "data set and seed)")
    ("overwrite-checkpoint", "start afresh in a --checkpoint-dir that holds a checkpoint, replacing it")
    ("max-steps", "stop after N global steps in total, checkpointing first when --checkpoint-dir is set (as if "
                  "preempted)", text("0"))
    ("check-every", "every N steps, all ranks compare a checksum of their parameters and stop at the first "
                    "difference (0 = only at the end of the run)", text("0"))
    ("isa", "CPU codec path: auto (EFSIGN_ISA if set, else avx2 where the CPU has it) | avx512 | avx2 | portable; "
            "identical bytes", text("auto"))
    ("h,help", "print this help");
  // clang-format on
  cxxopts::ParseResult r;
  try {
    r = spec.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(fmt::format("{} (see --help)", e.what()));
  }
  if (!r.unmatched().empty()) throw UsageError(fmt::format("unexpected argument '{}' (see --help)", r.unmatched()[0]));
  if (r.count("help")) {
    if (help) *help = spec.help();
    return std::nullopt;
  }
  auto str = [&](const char* name) { return r[name].as<std::string>(); };
  auto given = [&](const char* name) { return r.count(name) > 0; };
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();

  o.optimizer = parse_optimizer(str("optimizer"));
  o.model = str("model");
  o.dataset = to_dataset(str("dataset"));
  o.data_dir = str("data-dir");
  o.num_classes = to_int("--num-classes", str("num-classes"), 0, 100000);
  o.augment = to_switch("--augment", str("augment"));
  o.describe = given("describe");
  // --device / --comm, with --backend as their shorthand.
  const std::string backend = str("backend");
  if (!backend.empty() && backend != "mpi" && backend != "nccl")
    throw UsageError(fmt::format("unknown backend '{}' (choose mpi or nccl)", backend));
  std::string device = str("device"), comm = str("comm");
  if (!backend.empty() && (!device.empty() || !comm.empty()))
    throw UsageError("--backend is shorthand for --device and --comm: give one or the others");
  if (device.empty()) device = backend == "nccl" || comm == "nccl" ? "cuda" : "cpu";
  if (comm.empty()) comm = backend.empty() ? "mpi" : backend;
  if (device != "cpu" && device != "cuda") throw UsageError(fmt::format("--device must be cpu or cuda (got '{}')", device));
  o.device = device == "cuda" ? DeviceKind::kCuda : DeviceKind::kCpu;
  o.comm = parse_transport(comm);
  if (o.comm == Transport::kNccl && o.device != DeviceKind::kCuda)
    throw UsageError("--comm nccl moves GPU memory: it needs --device cuda");
  o.comm_timeout_s = to_double("--comm-timeout", str("comm-timeout"));
  if (o.comm_timeout_s < 0) throw UsageError("--comm-timeout must be >= 0");
  o.exchange = parse_exchange(str("exchange"));
  o.overlap = to_switch("--overlap", str("overlap"));
  o.bucket_mb = to_double("--bucket-mb", str("bucket-mb"));
  o.epochs = to_int("--epochs", str("epochs"), 1, 100000);
  o.steps_per_epoch = to_int("--steps-per-epoch", str("steps-per-epoch"), 0, kMax);
  o.batch_size = to_int("--batch-size", str("batch-size"), 1, kMax);
  o.global_batch = to_int("--global-batch", str("global-batch"), 0, kMax);
  if (given("lr")) {
    o.lr = to_double("--lr", str("lr"));
    if (*o.lr <= 0) throw UsageError(fmt::format("--lr must be a positive number (got {})", *o.lr));
  }
  o.scale_lr = given("scale-lr");
  o.warmup_epochs = given("warmup-epochs") ? to_int("--warmup-epochs", str("warmup-epochs"), 0, 100000)
                                           : (o.scale_lr ? 5 : 0);
  o.momentum = to_double("--momentum", str("momentum"));
  o.weight_decay = to_double("--weight-decay", str("weight-decay"));
  o.lr_milestones = to_int_list("--lr-milestones", str("lr-milestones"));
  o.lr_gamma = to_double("--lr-gamma", str("lr-gamma"));
  o.reset_state_at_milestones = given("reset-state-at-milestones");
  o.preset = str("preset");
  o.seed = to_u64("--seed", str("seed"));
  o.threads = static_cast<int>(to_int("--threads", str("threads"), 0, 4096));
  o.metrics_out = str("metrics-out");
  o.save_model = str("save-model");
  o.synthetic_train = to_int("--synthetic-train", str("synthetic-train"), 1, kMax);
  o.synthetic_test = to_int("--synthetic-test", str("synthetic-test"), 1, kMax);
  o.progress = to_switch("--progress", str("progress"));
  const std::string nonfinite = str("on-nonfinite");
  if (nonfinite != "skip" && nonfinite != "abort")
    throw UsageError(fmt::format("--on-nonfinite must be skip or abort (got '{}')", nonfinite));
  o.on_nonfinite = nonfinite == "abort" ? NonFinitePolicy::kAbort : NonFinitePolicy::kSkip;
  o.max_skipped_steps = to_int("--max-skipped-steps", str("max-skipped-steps"), 0, kMax);
  o.check_every = to_int("--check-every", str("check-every"), 0, kMax);
  o.checkpoint_dir = str("checkpoint-dir");
  o.checkpoint_every = to_int("--checkpoint-every", str("checkpoint-every"), 0, kMax);
  o.keep_checkpoints = static_cast<int>(to_int("--keep-checkpoints", str("keep-checkpoints"), 1, 1000));
  o.resume = given("resume");
  o.overwrite_checkpoint = given("overwrite-checkpoint");
  o.max_steps = to_int("--max-steps", str("max-steps"), 0, std::numeric_limits<int64_t>::max());
  const std::string isa = str("isa");
  if (isa != "auto" && isa != "avx512" && isa != "avx2" && isa != "portable")
    throw UsageError(fmt::format("--isa must be auto, avx512, avx2 or portable (got '{}')", isa));
  if (isa != "auto") o.isa = codec::parse_isa(isa);  // a UsageError if this CPU lacks it

  // Presets fill what the user did not give.
  if (!o.preset.empty()) {
    const auto names = preset_names();
    if (std::find(names.begin(), names.end(), o.preset) == names.end())
      throw UsageError(fmt::format("unknown preset '{}' (choose one of: {})", o.preset, fmt::join(names, ", ")));
    const bool paper = o.preset != "convnet-fashion-mnist";
    if (!given("model")) o.model = paper ? o.preset.substr(0, o.preset.find('-')) : "convnet";
    if (!given("dataset")) o.dataset = to_dataset(o.preset.substr(o.preset.find('-') + 1));
    if (!given("batch-size") && !given("global-batch")) o.global_batch = kPaperGlobalBatch;
    if (paper) {
      if (!given("epochs")) o.epochs = 200;
      if (!given("lr-milestones")) o.lr_milestones = {100, 150};
      if (!given("weight-decay")) o.weight_decay = 5e-4;
    }
    o.preset_lr = preset_lr(o.preset, o.optimizer);
  } else if (o.scale_lr) {
    throw UsageError("--scale-lr scales a preset's tuned learning rate: give --preset (or set --lr yourself)");
  }
  if (o.scale_lr && o.lr) throw UsageError("--scale-lr and --lr: give one (--lr is used as it is)");
  if (given("batch-size") && given("global-batch"))
    throw UsageError("--batch-size is per rank and --global-batch over all ranks: give one");

  const auto models = model_names();
  if (std::find(models.begin(), models.end(), o.model) == models.end())
    throw UsageError(fmt::format("unknown model '{}' (choose one of: {})", o.model, fmt::join(models, ", ")));
  const bool cifar = o.dataset == DatasetKind::kCifar10 || o.dataset == DatasetKind::kCifar100;
  if (o.data_dir.empty()) {
    if (o.dataset == DatasetKind::kFashionMnist) o.data_dir = "/usr/share/datasets/fashion-mnist";
    if (cifar && !o.describe)
      throw UsageError(fmt::format("--dataset {} needs --data-dir (the folder with the official binary files)",
                                   dataset_name(o.dataset)));
  }
  if (o.num_classes == 1) throw UsageError("--num-classes must be >= 2");
  if (o.optimizer == OptimizerKind::kSgdm && o.exchange != ExchangeKind::kAllgather)
    throw UsageError("sgdm always exchanges by fp32 allreduce: --exchange is for signsgd, signum and ef-signsgd");
  if (o.exchange == ExchangeKind::kVote && o.optimizer == OptimizerKind::kEfSignSgd)
    throw UsageError("--exchange vote is signSGD/signum with majority vote (Bernstein et al. 2019); with error "
                     "feedback each rank's error would track its own compression while the vote discards what "
                     "the ranks disagree on, and no error records it: use --optimizer signsgd or signum with vote, "
                     "or allgather/two-phase with ef-signsgd");
  if (!(o.bucket_mb > 0)) throw UsageError(fmt::format("--bucket-mb must be a positive number (got {})", o.bucket_mb));
  if (!(o.momentum >= 0 && o.momentum < 1)) throw UsageError(fmt::format("--momentum must be in [0, 1) (got {})", o.momentum));
  if (!(o.weight_decay >= 0)) throw UsageError(fmt::format("--weight-decay must be >= 0 (got {})", o.weight_decay));
  if (!(o.lr_gamma > 0 && o.lr_gamma <= 1)) throw UsageError(fmt::format("--lr-gamma must be in (0, 1] (got {})", o.lr_gamma));
  for (std::size_t i = 1; i < o.lr_milestones.size(); ++i)
    if (o.lr_milestones[i] <= o.lr_milestones[i - 1]) throw UsageError("--lr-milestones must increase");
  if ((o.resume || o.checkpoint_every > 0 || o.overwrite_checkpoint) && o.checkpoint_dir.empty())
    throw UsageError("--resume, --checkpoint-every and --overwrite-checkpoint need --checkpoint-dir");
  if (o.resume && o.overwrite_checkpoint) throw UsageError("--resume and --overwrite-checkpoint: give one");
  return o;
}

}  // namespace efsign
