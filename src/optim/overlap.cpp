#include "overlap.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>


#include "efsign/communicator.h"

namespace efsign::detail {

CommThread::CommThread() : thread_([this] { loop(); }) {}

CommThread::~CommThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CommThread::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_all();
}

void CommThread::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return (queue_.empty() && running_ == 0) || error_; });
  if (error_) {
    cv_.wait(lock, [this] { return running_ == 0; });
    queue_.clear();
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void CommThread::loop() {
  set_polite_waits(true);  // leave the cores to backward while the network works
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || (!queue_.empty() && !error_); });
    if (stop_) return;
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lock.unlock();
    std::exception_ptr failed;
    try {
      task();
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    --running_;
    if (failed && !error_) error_ = failed;
    cv_.notify_all();
  }
}

namespace {
class ReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(const std::function<void(int64_t)>* fn, int64_t layer) : fn_(fn), layer_(layer) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    (*fn_)(layer_);
    return outputs;
  }

 private:
  const std::function<void(int64_t)>* fn_;
  int64_t layer_;
};
}  // namespace

struct GradReadyHooks::Impl {
  std::function<void(int64_t)> on_ready;
  std::vector<std::shared_ptr<torch::autograd::Node>> nodes;
  std::vector<uintptr_t> keys;
};

GradReadyHooks::GradReadyHooks(const std::vector<at::Tensor>& params, std::function<void(int64_t)> on_ready)
    : impl_(std::make_unique<Impl>()) {
  impl_->on_ready = std::move(on_ready);
  for (std::size_t l = 0; l < params.size(); ++l) {
    if (!params[l].requires_grad() || !params[l].is_leaf()) continue;
    std::shared_ptr<torch::autograd::Node> node = torch::autograd::impl::grad_accumulator(params[l]);
    if (!node) continue;
    impl_->keys.push_back(
        node->add_post_hook(std::make_unique<ReadyHook>(&impl_->on_ready, static_cast<int64_t>(l))));
    impl_->nodes.push_back(std::move(node));
  }
}

GradReadyHooks::~GradReadyHooks() {
  for (std::size_t i = 0; i < impl_->nodes.size(); ++i) impl_->nodes[i]->del_post_hook(impl_->keys[i]);
}

}  // namespace efsign::detail
