#include <torch/torch.h>

#include <cstdio>

#include <fmt/format.h>

#include "train_internal.h"

namespace efsign::detail {

std::string human_bytes(double b) {
  if (b >= 1 << 20) return fmt::format("{:.2f} MiB", b / (1 << 20));
  if (b >= 1 << 10) return fmt::format("{:.1f} KiB", b / (1 << 10));
  return fmt::format("{:.0f} B", b);
}

void EpochMeter::add_step(const StepStats& st, double fb_ms, double loss, double correct, int64_t images) {
  ++steps_;
  if (st.skipped) ++skipped_;
  fwd_bwd_ms += fb_ms;
  compress_ms += st.compress_ms;
  comm_ms += st.comm_ms;
  update_ms += st.update_ms;
  wait_ms += st.wait_ms;
  bytes += static_cast<double>(st.bytes_sent);
  wire += static_cast<double>(st.wire_bytes);
  const double n = static_cast<double>(images);
  loss_sum_ += loss * n;
  correct_ += correct;
  images_ += n;
}

void EpochMeter::finish(HostCommunicator& comm) {
  agg_[0] = loss_sum_;
  agg_[1] = correct_;
  agg_[2] = images_;
  comm.allreduce_sum(Span<double>(agg_, 3));
}

void ProgressBar::update(int64_t epoch, int64_t step, int64_t steps, double loss, double img_per_s) {
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

void ProgressBar::finish() {
  if (enabled_) std::fprintf(stderr, "\r%*s\r", 100, "");
}

void print_description(const TrainOptions& o, const ModelSpec& spec) {
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
             "({:.1f}x fewer handed to the network)\n",
             layers.size(), total, fp32, comp, static_cast<double>(fp32) / static_cast<double>(comp));
}

}  // namespace efsign::detail
