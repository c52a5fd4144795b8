// bench/bench_common.h — what the efsign-bench tools share: timing across ranks,
// aligned host arrays, the comm checks' gradients, comma lists, JSON output files.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "efsign/communicator.h"
#include "efsign/error.h"

namespace efsign::bench {

using Clock = std::chrono::steady_clock;

struct Timing {
  double median = 0, min = 0, max = 0;
};

inline Timing summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

inline double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Collective: `warmup` untimed calls, then `iters` timed ones, each started together
// (barrier) and counted at the slowest rank's time.
template <typename Fn>
Timing time_it(HostCommunicator& comm, int warmup, int iters, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    comm.barrier();
    const auto t0 = Clock::now();
    fn();
    double t[1] = {ms_since(t0)};
    std::vector<double> all(comm.size());
    comm.allgather(as_bytes(Span<const double>(t, 1)), as_writable_bytes(Span<double>(all)));
    ms.push_back(*std::max_element(all.begin(), all.end()));
  }
  return summarize(ms);
}

// A 64-byte aligned float array (what LibTorch's CPU allocator gives a tensor).
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t n)
      : n_(static_cast<std::size_t>(n)),
        p_(static_cast<float*>(std::aligned_alloc(64, std::max<int64_t>(64, ((4 * n + 63) / 64) * 64)))) {
    if (!p_) throw Error("out of memory");
    std::memset(p_.get(), 0, 4 * n);
  }
  float* data() { return p_.get(); }
  Span<float> span() { return Span<float>(p_.get(), n_); }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::size_t n_;
  std::unique_ptr<float[], Free> p_;
};

// Rank r's gradient for the checks: standard normal, a function of (r, i) alone.
inline void fill_grad(Span<float> g, int rank) {
  std::mt19937 rng(1234 + rank);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : g) v = nd(rng);
}

inline std::vector<std::string> split_csv(const std::string& csv) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : csv + ",") {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

// Opens `path` for the JSON Lines records (nothing when empty); an InputError that
// names the file and the OS's reason when it cannot be written.
inline std::ofstream open_json(const std::string& path) {
  std::ofstream out;
  if (path.empty()) return out;
  out.open(path);
  if (!out) throw InputError("--json " + path + ": cannot open for writing (" + std::strerror(errno) + ")");
  return out;
}

// The four tools (bench_*.cpp): argv[0] is the tool's name.
int run_comm(int argc, char** argv, HostCommunicator& control);
int run_codec(int argc, char** argv, HostCommunicator& control);
int run_loader(int argc, char** argv, HostCommunicator& control);
int run_step(int argc, char** argv, std::shared_ptr<HostCommunicator> control);

}  // namespace efsign::bench
