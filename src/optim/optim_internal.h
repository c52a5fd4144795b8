// Internal to src/optim: the optimizer factories per family and a stopwatch.
#pragma once

#include <chrono>
#include <memory>

#include "efsign/optimizer.h"

namespace efsign::detail {

std::unique_ptr<DistributedOptimizer> make_sgdm(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                                                std::shared_ptr<HostCommunicator> control,
                                                const OptimizerConfig& config, std::shared_ptr<Codec> codec);
std::unique_ptr<DistributedOptimizer> make_sign(std::vector<at::Tensor> params, std::shared_ptr<Communicator> data,
                                                std::shared_ptr<HostCommunicator> control,
                                                const OptimizerConfig& config, std::shared_ptr<Codec> codec);

class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  double lap_ms() {
    const auto t = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(t - t0_).count();
    t0_ = t;
    return ms;
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace efsign::detail
