// bench/bench_common.h — what the efsign-bench tools share: timing across ranks,
// aligned host arrays, the comm checks' gradients, comma lists, JSON output files,
// the memory a size needs against what is available.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

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

// The --json records: opened at once (open_json's errors), each record flushed when
// written so that a failure (a full disk, /dev/full) is seen with the OS's reason where
// it happens; close() reports it. Collective tools call close() after their last
// collective, so that rank 0 failing there leaves no rank waiting.
class JsonFile {
 public:
  JsonFile() = default;
  explicit JsonFile(const std::string& path) { open(path); }
  void open(const std::string& path) {
    out_ = open_json(path);
    path_ = path;
    error_ = 0;
  }
  bool enabled() const { return out_.is_open(); }
  void write(const std::string& line) {
    if (!enabled() || error_ != 0) return;
    errno = 0;
    out_ << line << '\n';
    out_.flush();
    if (!out_) error_ = errno != 0 ? errno : EIO;
  }
  // Closes the file; InputError naming the file and the first failure's reason.
  void close() {
    if (!enabled()) return;
    errno = 0;
    out_.close();
    if (out_.fail() && error_ == 0) error_ = errno != 0 ? errno : EIO;
    if (error_ != 0)
      throw InputError("--json " + path_ + ": cannot write the records (" + std::strerror(error_) + ")");
  }

 private:
  std::string path_;
  std::ofstream out_;
  int error_ = 0;
};

// Bytes this process can still get: MemAvailable (/proc/meminfo; else free pages from
// sysconf), and less when a cgroup v2 limit leaves less (memory.max - memory.current).
// `source` says where the figure comes from; 0 bytes when nothing could be read.
struct AvailableMemory {
  int64_t bytes = 0;
  std::string source;
};

inline AvailableMemory available_memory() {
  AvailableMemory m;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") {
      m.bytes = kib * 1024;
      m.source = "MemAvailable in /proc/meminfo";
      break;
    }
  }
  if (m.bytes == 0) {
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
      m.bytes = static_cast<int64_t>(pages) * page;
      m.source = "free memory (sysconf)";
    }
  }
  std::ifstream max_file("/sys/fs/cgroup/memory.max"), cur_file("/sys/fs/cgroup/memory.current");
  std::string max_text;
  int64_t current = 0;
  char* end = nullptr;
  const long long limit = max_file >> max_text ? std::strtoll(max_text.c_str(), &end, 10) : 0;
  if (limit > 0 && end && *end == '\0' && cur_file >> current) {  // "max": no limit
    const int64_t left = std::max<int64_t>(0, limit - current);
    if (m.bytes == 0 || left < m.bytes) {
      m.bytes = left;
      m.source = "the cgroup's memory.max - memory.current";
    }
  }
  return m;
}

inline std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / (1024.0 * 1024 * 1024)); }

// "" if `need` bytes fit in what is available now, else the message of a UsageError
// that says what was asked (`what`) and what is available. Nothing known: "".
inline std::string memory_shortfall(double need, const std::string& what) {
  const AvailableMemory m = available_memory();
  if (m.bytes == 0 || need <= static_cast<double>(m.bytes)) return "";
  return fmt::format("{} needs about {} of memory, but only {} is available ({})", what, gib(need), gib(m.bytes),
                     m.source);
}

// The four tools (bench_*.cpp): argv[0] is the tool's name.
int run_comm(int argc, char** argv, HostCommunicator& control);
int run_codec(int argc, char** argv, HostCommunicator& control);
int run_loader(int argc, char** argv, HostCommunicator& control);
int run_step(int argc, char** argv, std::shared_ptr<HostCommunicator> control);

}  // namespace efsign::bench
