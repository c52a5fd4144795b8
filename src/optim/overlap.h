// Internal to src/optim: what --overlap needs, a communication thread and a signal
// from backward that a parameter's gradient is complete.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/core/Tensor.h>

namespace efsign::detail {

// Runs posted tasks one at a time, in order, on its own thread. wait() returns once
// every task posted so far has run, and rethrows the first exception one threw (the
// tasks after a failed one are dropped: their collectives must not start).
class CommThread {
 public:
  CommThread();
  ~CommThread();
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;
  void post(std::function<void()> task);
  void wait();

 private:
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  int running_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

// Calls on_ready(l) right after backward has accumulated parameter l's gradient into
// .grad: a post hook on the parameter's AccumulateGrad node, as DDP's reducer does.
// Holds the nodes (a parameter only keeps a weak reference) and removes its hooks
// when destroyed. Parameters that do not require grad get no hook.
class GradReadyHooks {
 public:
  GradReadyHooks(const std::vector<at::Tensor>& params, std::function<void(int64_t)> on_ready);
  ~GradReadyHooks();
  GradReadyHooks(const GradReadyHooks&) = delete;
  GradReadyHooks& operator=(const GradReadyHooks&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace efsign::detail
