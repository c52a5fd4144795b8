// efsign/trainer.h — the training loop: epochs, evaluation, metrics, the final
// replica check. The only layer that knows about epochs and files.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "efsign/communicator.h"

namespace efsign {

struct TrainOptions {
  std::string optimizer = "ef-signsgd";
  std::string model = "convnet";
  std::string dataset = "fashion-mnist";
  std::string data_dir;           // empty: /usr/share/datasets/fashion-mnist for fashion-mnist
  int64_t num_classes = 0;        // 0: the data set's (10, or 100 for cifar100)
  std::string augment = "auto";   // auto (on for cifar) | on | off: random crop (pad 4) + flip
  bool describe = false;          // print the per-layer table and exit
  std::string backend = "mpi";    // mpi (CPU tensors) | nccl (one GPU per rank)
  double comm_timeout_s = 300;    // NCCL watchdog
  std::string exchange = "allgather";  // allgather | two-phase | vote (sign optimizers)
  bool overlap = false;                // bucketed exchange on a thread during backward
  double bucket_mb = 25;               // bucket size with overlap (MiB of fp32)
  int64_t epochs = 1;
  int64_t steps_per_epoch = 0;  // 0: the whole epoch
  int64_t batch_size = 64;      // per rank
  std::optional<double> lr;     // unset: the optimizer's default for the model
  double momentum = 0.9;
  double weight_decay = 0.0;
  std::vector<int64_t> lr_milestones;
  bool reset_state_at_milestones = false;  // the reference code's restart: zero error + momentum
  std::string preset;                      // see preset_names(); fills flags the user did not give
  double preset_lr = 0;                    // the preset's lr at a global batch of 128 (0: no preset lr)
  double lr_gamma = 0.1;
  uint64_t seed = 42;
  int threads = 1;
  std::string metrics_out;
  int64_t synthetic_train = 8192, synthetic_test = 2048;
  int64_t eval_batch = 1000;
  std::string progress = "auto";  // auto | on | off
  std::string on_nonfinite = "skip";  // skip | abort (a NaN/Inf gradient on any rank)
  int64_t check_every = 0;        // compare parameter checksums across ranks every N steps (0: only at the end)
  std::string checkpoint_dir;     // checkpoint at every epoch end (and every N steps below)
  int64_t checkpoint_every = 0;   // also every N global steps (0: epoch ends only)
  bool resume = false;            // continue from checkpoint_dir
  int64_t max_steps = 0;          // stop after this many global steps (0: run all epochs)
  std::string isa = "auto";       // codec path: auto | avx2 | portable
};

// Parses argv. Returns nullopt and fills *help when --help was given.
// Throws UsageError (one line) for anything invalid.
std::optional<TrainOptions> parse_train_options(int argc, char** argv, std::string* help);

// Learning rate used when --lr is not given (tuned for 1 epoch of Fashion-MNIST).
double default_lr(const std::string& optimizer, const std::string& model);

// The paper's configurations (section 6, appendix A): resnet18-cifar100, vgg19-cifar10,
// and convnet-fashion-mnist (this project's quick CPU analogue).
std::vector<std::string> preset_names();
// The learning rate a run uses: --lr if given; else the preset's lr scaled by the
// global batch (W x per-rank batch) / 128, as the paper scales lr with batch size;
// else default_lr().
double effective_lr(const TrainOptions& options, int world_size);

struct TrainResult {
  double test_acc = 0, test_loss = 0;
  std::string param_checksum;
  double bytes_sent_per_step = 0;
  double wire_bytes_per_step = 0;  // ring model (communicator.h)
  int64_t fp32_bytes_per_step = 0;
};

// Collective: every rank calls it with the same options. Progress and epoch lines
// go to stdout/stderr on rank 0 only; metrics JSON Lines to options.metrics_out.
TrainResult run_training(const TrainOptions& options, std::shared_ptr<HostCommunicator> control);

}  // namespace efsign
