#include <torch/torch.h>

#include "train_internal.h"

namespace efsign::detail {

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

}  // namespace efsign::detail
