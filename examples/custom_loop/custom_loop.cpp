// custom_loop — a plain LibTorch training loop (your model, your data, your loop),
// changed in the lines marked "efsign:" to train data-parallel with EF-SignSGD: one
// replica per MPI rank, 1 sign bit per parameter on the wire.
//
//   mpirun -np 2 ./custom_loop [--epochs 6] [--device cpu|cuda] [--comm mpi|nccl]
//
// Prints the training loss per epoch, the test accuracy and each rank's parameter
// checksum (the replicas hold the same bytes, or check_replicas throws on every rank).
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <efsign/ddp.h>               // efsign: broadcast_parameters, average_buffers, check_replicas
#include <efsign/mpi_communicator.h>  // efsign: MpiSession
#include <efsign/optimizer.h>         // efsign: make_optimizer
#include <efsign/transport.h>         // efsign: the communicators

constexpr int64_t kFeatures = 32, kHidden = 64, kClasses = 4;
constexpr int64_t kTrain = 8192, kTest = 2048, kBatch = 64;  // kBatch per rank

// Your model: anything torch::nn; its BatchNorm statistics are buffers.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(kFeatures, kHidden))),
        bn(register_module("bn", torch::nn::BatchNorm1d(kHidden))),
        fc2(register_module("fc2", torch::nn::Linear(kHidden, kClasses))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(bn(fc1(x)))); }
  torch::nn::Linear fc1;
  torch::nn::BatchNorm1d bn;
  torch::nn::Linear fc2;
};
TORCH_MODULE(Net);

// Your data: points labelled by a fixed random two-layer "teacher" network, learnable
// (no label noise) but not linearly separable. The same seed gives every rank the same set.
struct Data {
  torch::Tensor x, y;
};
Data make_data(int64_t n, torch::Tensor w1, torch::Tensor w2) {
  torch::Tensor x = torch::randn({n, kFeatures});
  return {x, torch::tanh(x.matmul(w1)).matmul(w2).argmax(1)};
}

int main(int argc, char** argv) {
  efsign::MpiSession mpi(&argc, &argv);                      // efsign: MPI_Init ... MPI_Finalize
  const auto control = efsign::make_control_communicator();   // efsign: collectives over host memory
  const int rank = control->rank(), world = control->size();  // efsign
  int64_t epochs = 6;
  std::string device_name = "cpu", comm = "mpi";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--epochs") epochs = std::stoll(argv[i + 1]);
    if (flag == "--device") device_name = argv[i + 1];
    if (flag == "--comm") comm = argv[i + 1];
  }
  torch::Device device(torch::kCPU);
  if (device_name == "cuda") device = torch::Device(torch::kCUDA, efsign::mpi_local_rank());  // efsign: a GPU per rank

  torch::manual_seed(1);
  // A fixed random teacher; its hidden layer gets unit-variance inputs (tanh, not a step).
  const torch::Tensor w1 = torch::randn({kFeatures, 16}) / std::sqrt(static_cast<double>(kFeatures));
  const torch::Tensor w2 = torch::randn({16, kClasses});
  const Data train = make_data(kTrain, w1, w2), test = make_data(kTest, w1, w2);
  Net model;
  efsign::broadcast_parameters(*model, *control);  // efsign: every replica starts from rank 0's weights
  model->to(device);

  // Was: torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.1));
  efsign::TransportOptions transport;                     // efsign: what moves the gradients' signs
  transport.transport = efsign::parse_transport(comm);    // efsign: mpi, or nccl (GPU memory)
  transport.device = device.is_cuda() ? device.index() : -1;                  // efsign
  const auto data = efsign::make_data_communicator(*control, transport);      // efsign
  efsign::OptimizerConfig cfg;                                                // efsign
  cfg.kind = efsign::OptimizerKind::kEfSignSgd;                               // efsign
  cfg.lr = 0.1;                                                               // efsign
  auto optimizer = efsign::make_optimizer(model->parameters(), data, control, cfg);  // efsign

  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    model->train();
    const torch::Tensor order = torch::randperm(kTrain);  // the same on every rank (same seed)
    std::vector<double> loss_sum{0.0, 0.0};               // losses, batches
    // efsign: a step takes kBatch * world examples, kBatch of them on this rank.
    for (int64_t start = 0; start + kBatch * world <= kTrain; start += kBatch * world) {
      const int64_t first = start + rank * kBatch;  // efsign: was start
      const torch::Tensor idx = order.slice(0, first, first + kBatch);
      const torch::Tensor x = train.x.index_select(0, idx).to(device);
      const torch::Tensor y = train.y.index_select(0, idx).to(device);
      model->zero_grad();
      const torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      optimizer->step();  // efsign: was optimizer.step()
      loss_sum[0] += loss.item<double>();
      loss_sum[1] += 1;
    }
    control->allreduce_sum(loss_sum);  // efsign: the mean over every rank's batches
    if (rank == 0) std::printf("epoch %" PRId64 " train loss %.4f\n", epoch, loss_sum[0] / loss_sum[1]);
  }

  efsign::average_buffers(*model, *control);  // efsign: BatchNorm statistics were rank-local
  // efsign: the parameters' and buffers' checksum, the same on every rank (else AgreedError)
  const uint64_t agreed = efsign::check_replicas(*model, *control, /*with_buffers=*/true, "after training");

  torch::NoGradGuard no_grad;
  model->eval();
  const torch::Tensor pred = model->forward(test.x.to(device)).argmax(1).cpu();
  const double accuracy = pred.eq(test.y).to(torch::kDouble).mean().item<double>();
  std::printf("rank %d checksum %016" PRIx64 "\n", rank, efsign::replica_checksum(*model, /*with_buffers=*/true));
  if (rank == 0) {
    std::printf("test accuracy %.4f (%" PRId64 " examples)\n", accuracy, kTest);
    std::printf("bytes per step per rank %" PRId64 " (fp32: %" PRId64 ")\n", optimizer->handed_bytes_per_step(),
                optimizer->layers().fp32_bytes());
    std::printf("agreed checksum %016" PRIx64 "\n", agreed);
  }
  return 0;
}
