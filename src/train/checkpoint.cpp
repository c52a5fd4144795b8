#include "efsign/checkpoint.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>

#include <fmt/format.h>

#include "efsign/checksum.h"
#include "efsign/error.h"
#include "efsign/metrics.h"

namespace efsign {
namespace {

constexpr char kMagic[8] = {'E', 'F', 'S', 'I', 'G', 'N', 'C', 'K'};
constexpr uint32_t kVersion = 1;

std::string rank_file(const std::string& dir, int rank) { return fmt::format("{}/rank-{}.ckpt", dir, rank); }

class Writer {
 public:
  void bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const char*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  template <typename T>
  void pod(T v) {
    bytes(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint32_t>(static_cast<uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  std::vector<char>& buf() { return buf_; }

 private:
  std::vector<char> buf_;
};

class Reader {
 public:
  Reader(const std::vector<char>& buf, std::string path) : buf_(buf), path_(std::move(path)) {}
  void bytes(void* p, std::size_t n) {
    if (n > buf_.size() - pos_) throw InputError(fmt::format("{}: truncated or corrupt checkpoint", path_));
    std::memcpy(p, buf_.data() + pos_, n);
    pos_ += n;
  }
  template <typename T>
  T pod() {
    T v;
    bytes(&v, sizeof v);
    return v;
  }
  std::string str() {
    const uint32_t n = pod<uint32_t>();
    if (n > 4096) throw InputError(fmt::format("{}: corrupt checkpoint (implausible name length)", path_));
    std::string s(n, '\0');
    bytes(s.data(), n);
    return s;
  }

 private:
  const std::vector<char>& buf_;
  std::string path_;
  std::size_t pos_ = 0;
};

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kLong: return 2;
    case at::kInt: return 3;
    default: throw Error(fmt::format("checkpoint: unsupported dtype {}", c10::toString(t)));
  }
}

void write_atomically(const std::string& path, const std::vector<char>& data) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw InputError(fmt::format("{}: cannot write checkpoint ({})", tmp, std::strerror(errno)));
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0) {
      const int err = errno;
      ::close(fd);
      throw InputError(fmt::format("{}: cannot write checkpoint ({})", tmp, std::strerror(err)));
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw InputError(fmt::format("{}: cannot flush checkpoint ({})", tmp, std::strerror(errno)));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw InputError(fmt::format("{}: cannot rename checkpoint into place ({})", path, std::strerror(errno)));
}

}  // namespace

void save_checkpoint(const std::string& dir, const CheckpointHeader& h, const NamedTensors& tensors) {
  ::mkdir(dir.c_str(), 0755);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw InputError(fmt::format("{}: checkpoint directory cannot be created", dir));
  Writer w;
  w.bytes(kMagic, sizeof kMagic);
  w.pod(kVersion);
  w.pod(h.world_size);
  w.pod(h.rank);
  w.pod(h.epoch);
  w.pod(h.step);
  w.pod(h.global_step);
  w.pod(h.layout_hash);
  w.pod(h.seed);
  w.str(h.model);
  w.str(h.optimizer);
  w.pod<uint32_t>(static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.detach().to(at::kCPU).contiguous();
    w.str(name);
    w.pod<uint8_t>(static_cast<uint8_t>(dtype_code(c.scalar_type())));
    w.pod<uint32_t>(static_cast<uint32_t>(c.dim()));
    for (int64_t d : c.sizes()) w.pod<int64_t>(d);
    const uint64_t n = static_cast<uint64_t>(c.numel() * c.element_size());
    w.pod(n);
    w.bytes(c.data_ptr(), n);
  }
  const uint64_t sum = fnv1a(Span<const std::byte>(reinterpret_cast<const std::byte*>(w.buf().data()), w.buf().size()));
  w.pod(sum);
  write_atomically(rank_file(dir, h.rank), w.buf());
}

CheckpointHeader load_checkpoint(const std::string& dir, const CheckpointHeader& expect, const NamedTensors& into) {
  const std::string path = rank_file(dir, expect.rank);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: no checkpoint here ({})", path, std::strerror(errno)));
  std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (buf.size() < sizeof kMagic + 12 || std::memcmp(buf.data(), kMagic, sizeof kMagic) != 0)
    throw InputError(fmt::format("{}: not an efsign checkpoint", path));
  uint64_t stored = 0;
  std::memcpy(&stored, buf.data() + buf.size() - 8, 8);
  if (fnv1a(Span<const std::byte>(reinterpret_cast<const std::byte*>(buf.data()), buf.size() - 8)) != stored)
    throw InputError(fmt::format("{}: corrupt checkpoint (checksum mismatch)", path));
  Reader r(buf, path);
  char magic[8];
  r.bytes(magic, 8);
  const uint32_t version = r.pod<uint32_t>();
  if (version != kVersion)
    throw InputError(fmt::format("{}: checkpoint format version {} (this build reads {})", path, version, kVersion));
  CheckpointHeader h;
  h.world_size = r.pod<int32_t>();
  h.rank = r.pod<int32_t>();
  h.epoch = r.pod<int64_t>();
  h.step = r.pod<int64_t>();
  h.global_step = r.pod<int64_t>();
  h.layout_hash = r.pod<uint64_t>();
  h.seed = r.pod<uint64_t>();
  h.model = r.str();
  h.optimizer = r.str();
  auto mismatch = [&](const char* what, const std::string& theirs, const std::string& ours) {
    if (theirs != ours)
      throw InputError(fmt::format("{}: checkpoint was written with {} {}, this run has {}", dir, what, theirs, ours));
  };
  mismatch("world size", std::to_string(h.world_size), std::to_string(expect.world_size));
  mismatch("model", h.model, expect.model);
  mismatch("optimizer", h.optimizer, expect.optimizer);
  mismatch("layer table", hex64(h.layout_hash), hex64(expect.layout_hash));
  mismatch("seed", std::to_string(h.seed), std::to_string(expect.seed));
  if (h.rank != expect.rank) throw InputError(fmt::format("{}: file of rank {} found under rank {}'s name", path, h.rank, expect.rank));
  std::map<std::string, at::Tensor> targets(into.begin(), into.end());
  const uint32_t count = r.pod<uint32_t>();
  if (count != into.size())
    throw InputError(fmt::format("{}: checkpoint holds {} tensors, this run has {}", path, count, into.size()));
  for (uint32_t i = 0; i < count; ++i) {
    const std::string name = r.str();
    const int code = r.pod<uint8_t>();
    const uint32_t ndim = r.pod<uint32_t>();
    if (ndim > 8) throw InputError(fmt::format("{}: corrupt checkpoint (tensor {} has {} dims)", path, name, ndim));
    std::vector<int64_t> dims(ndim);
    for (auto& d : dims) d = r.pod<int64_t>();
    const uint64_t n = r.pod<uint64_t>();
    auto it = targets.find(name);
    if (it == targets.end()) throw InputError(fmt::format("{}: checkpoint tensor '{}' does not exist in this run", path, name));
    at::Tensor& dst = it->second;
    if (dims != dst.sizes().vec() || code != dtype_code(dst.scalar_type()) ||
        n != static_cast<uint64_t>(dst.numel() * dst.element_size()))
      throw InputError(fmt::format("{}: checkpoint tensor '{}' does not match this run's shape or type", path, name));
    at::Tensor host = at::empty(dims, dst.options().device(at::kCPU));
    r.bytes(host.data_ptr(), n);
    at::NoGradGuard no_grad;
    dst.copy_(host);
  }
  return h;
}

void write_manifest(const std::string& dir, const CheckpointHeader& h) {
  const std::string line = JsonLine()
                               .add("format", "efsign-checkpoint")
                               .add("version", static_cast<int64_t>(kVersion))
                               .add("world_size", h.world_size)
                               .add("model", h.model)
                               .add("optimizer", h.optimizer)
                               .add("layout_hash", hex64(h.layout_hash))
                               .add("epoch", h.epoch)
                               .add("step", h.step)
                               .add("global_step", h.global_step)
                               .str() + "\n";
  write_atomically(dir + "/manifest.json", std::vector<char>(line.begin(), line.end()));
}

}  // namespace efsign
