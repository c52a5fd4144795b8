// efsign/trainer.h — efsign-train's training run: options parsed once into typed
// values, the run itself (set-up agreed across ranks, the epoch loop, evaluation,
// checkpoints, metrics, the final replica check). The only layer that knows about
// epochs and files; a client of the library (efsign/optimizer.h, ddp.h, checkpoint.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "efsign/codec.h"
#include "efsign/communicator.h"
#include "efsign/exchange.h"
#include "efsign/optimizer.h"
#include "efsign/transport.h"

namespace efsign {

enum class DatasetKind { kFashionMnist, kSynthetic, kCifar10, kCifar100 };
std::string dataset_name(DatasetKind kind);  // "fashion-mnist", ...
enum class Switch { kAuto, kOn, kOff };      // --augment, --progress

struct TrainOptions {
  OptimizerKind optimizer = OptimizerKind::kEfSignSgd;
  std::string model = "convnet";  // models.h's names
  DatasetKind dataset = DatasetKind::kFashionMnist;
  std::string data_dir;           // resolved: /usr/share/datasets/fashion-mnist for fashion-mnist
  int64_t num_classes = 0;        // 0: the data set's (10, or 100 for cifar100)
  Switch augment = Switch::kAuto;  // auto: on for CIFAR
  bool describe = false;          // print the per-layer table and exit
  DeviceKind device = DeviceKind::kCpu;  // --device: where the model and the codec run
  Transport comm = Transport::kMpi;      // --comm: what moves the gradients
  double comm_timeout_s = 300;
  ExchangeKind exchange = ExchangeKind::kAllgather;
  // --overlap: on, off, or auto = on when the model's gradient fills more than one
  // bucket (with one bucket the exchange can only start when backward has ended, so
  // the communication thread would add its hand-off and hide nothing).
  Switch overlap = Switch::kAuto;
  double bucket_mb = 25;
  int64_t epochs = 1;
  int64_t steps_per_epoch = 0;  // 0: the whole epoch
  int64_t batch_size = 64;      // per rank (--global-batch sets it to global / W)
  int64_t global_batch = 0;     // --global-batch, or the preset's; 0: W x batch_size
  std::optional<double> lr;     // unset: the preset's tuned lr, else the optimizer's default
  bool scale_lr = false;        // lr x global batch / 128, with warm-up (Goyal et al. 2017)
  int64_t warmup_epochs = 0;    // linear warm-up of the lr over these epochs
  double momentum = 0.9;
  double weight_decay = 0.0;
  std::vector<int64_t> lr_milestones;
  double lr_gamma = 0.1;
  bool reset_state_at_milestones = false;
  std::string preset;
  double preset_lr = 0;  // the preset's tuned lr at the paper's global batch of 128
  uint64_t seed = 42;
  int threads = 1;
  std::string metrics_out;
  std::string save_model;  // write the final parameters and buffers as safetensors
  int64_t synthetic_train = 8192, synthetic_test = 2048;
  int64_t eval_batch = 1000;
  Switch progress = Switch::kAuto;
  NonFinitePolicy on_nonfinite = NonFinitePolicy::kSkip;
  int64_t max_skipped_steps = 50;  // consecutive skipped steps that end the run
  int64_t check_every = 0;
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  int keep_checkpoints = 2;
  bool resume = false;
  bool overwrite_checkpoint = false;
  int64_t max_steps = 0;
  std::optional<codec::Isa> isa;  // unset: codec::best_isa()

  // A hash of every option that must be the same on every rank (all but file paths
  // and display), compared at start-up.
  uint64_t agreement_hash() const;
};

// Parses argv. Returns nullopt and fills *help when --help was given. Throws
// UsageError (one line naming the option) for anything invalid.
std::optional<TrainOptions> parse_train_options(int argc, char** argv, std::string* help);

// The paper's configurations (section 6, appendix A): resnet18-cifar100, vgg19-cifar10,
// and convnet-fashion-mnist (this project's quick CPU analogue).
std::vector<std::string> preset_names();
// Learning rate when neither --lr nor a preset gives one (tuned for 1 epoch of
// Fashion-MNIST at batch 64 per rank, 2-4 ranks).
double default_lr(OptimizerKind optimizer);
// The base learning rate: --lr; else the preset's (x global batch / 128 with
// --scale-lr); else default_lr(). The schedule (warm-up, milestones) applies on top.
double base_lr(const TrainOptions& options, int64_t global_batch);
// The learning rate of `epoch` (1-based) at `step` of `steps` in it.
double scheduled_lr(const TrainOptions& options, double base, int64_t epoch, int64_t step, int64_t steps);

// Test hooks (efsign-train sets them from the environment for the shell tests).
struct TrainHooks {
  // After every optimizer step, with the 1-based global step.
  std::function<void(torch::nn::Module& model, int64_t global_step)> after_step;
  // Before the final replica check.
  std::function<void(torch::nn::Module& model)> before_final_check;
};

struct TrainResult {
  double test_acc = 0, test_loss = 0;
  std::string param_checksum;
  double bytes_sent_per_step = 0;
  double wire_bytes_per_step = 0;  // ring model (communicator.h)
  int64_t fp32_bytes_per_step = 0;
  int64_t steps = 0, skipped_steps = 0;
  bool already_complete = false;  // a resume found nothing left to do
};

// Collective: every rank calls it with the same options. Progress and epoch lines
// go to stdout/stderr on rank 0 only; metrics JSON Lines to options.metrics_out.
TrainResult run_training(const TrainOptions& options, std::shared_ptr<HostCommunicator> control,
                         const TrainHooks& hooks = {});

}  // namespace efsign
