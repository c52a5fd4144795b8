#include "efsign/checkpoint.h"

#include <ATen/ATen.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

#include <fmt/format.h>

#include "efsign/checksum.h"
#include "efsign/error.h"
#include "efsign/metrics.h"
#include "../util/durable_file.h"

namespace efsign {
namespace {

constexpr char kMagic[8] = {'E', 'F', 'S', 'I', 'G', 'N', 'C', 'K'};
constexpr uint32_t kVersion = 2;  // 2: batch size, data set and threads in the header

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
  std::size_t position() const { return pos_; }
  void skip(std::size_t n) {
    if (n > buf_.size() - pos_) throw InputError(fmt::format("{}: truncated or corrupt checkpoint", path_));
    pos_ += n;
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

std::string os_error(int err) { return std::strerror(err); }

void write_atomically(const std::string& path, const std::vector<char>& data) {
  detail::write_file_durably(path, {Span<const std::byte>(reinterpret_cast<const std::byte*>(data.data()), data.size())},
                             "checkpoint");
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// The generations (gen-NNNNNN folders) in `dir`, ascending.
std::vector<int64_t> generations(const std::string& dir) {
  std::vector<int64_t> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() == 10 && name.compare(0, 4, "gen-") == 0 &&
        name.find_first_not_of("0123456789", 4) == std::string::npos)
      out.push_back(std::stoll(name.substr(4)));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string gen_dir(const std::string& dir, int64_t g) { return fmt::format("{}/gen-{:06d}", dir, g); }
std::string rank_file(const std::string& dir, int rank) { return fmt::format("{}/rank-{}.ckpt", dir, rank); }

// Removes this rank's file (and its .tmp) from `folder`; folders are left to rmdir_quiet.
void remove_rank_files(const std::string& folder, int rank) {
  ::unlink(rank_file(folder, rank).c_str());
  ::unlink((rank_file(folder, rank) + ".tmp").c_str());
}
void rmdir_quiet(const std::string& folder) { ::rmdir(folder.c_str()); }  // only if empty

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string s;
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return dims.empty() ? "a scalar" : s;
}

std::vector<char> encode(const CheckpointHeader& h, const NamedTensors& tensors) {
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
  w.pod(h.batch_size);
  w.str(h.dataset);
  w.pod(h.threads);
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
  return std::move(w.buf());
}

}  // namespace

void write_checkpoint_file(const std::string& path, const CheckpointHeader& header, const NamedTensors& tensors) {
  write_atomically(path, encode(header, tensors));
}

CheckpointHeader read_checkpoint_file(const std::string& path, const CheckpointHeader& expect,
                                      const NamedTensors& into) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: no checkpoint here ({})", path, os_error(errno)));
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
  if (version != 1 && version != kVersion)
    throw InputError(fmt::format("{}: checkpoint format version {} (this build reads 1 and {})", path, version,
                                 kVersion));
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
  if (version >= 2) {  // format 1 (efsign 0.1) did not record these: they are not compared
    h.batch_size = r.pod<int64_t>();
    h.dataset = r.str();
    h.threads = r.pod<int32_t>();
  }
  const std::string dir = detail::parent_of(path);
  auto mismatch = [&](const char* what, const std::string& theirs, const std::string& ours) {
    if (theirs != ours)
      throw InputError(fmt::format("{}: checkpoint was written with {} {}, this run has {}", dir, what, theirs, ours));
  };
  mismatch("world size", std::to_string(h.world_size), std::to_string(expect.world_size));
  mismatch("model", h.model, expect.model);
  mismatch("optimizer", h.optimizer, expect.optimizer);
  mismatch("seed", std::to_string(h.seed), std::to_string(expect.seed));
  if (version >= 2) {
    mismatch("data set", h.dataset, expect.dataset);
    mismatch("batch size per rank", std::to_string(h.batch_size), std::to_string(expect.batch_size));
  }
  if (h.rank != expect.rank)
    throw InputError(fmt::format("{}: file of rank {} found under rank {}'s name", path, h.rank, expect.rank));
  // The tensors: their names and shapes first (a different layer table names the first
  // tensor that differs), then the data.
  struct Entry {
    std::string name;
    int code;
    std::vector<int64_t> dims;
    uint64_t bytes;
    std::size_t at;
  };
  const uint32_t count = r.pod<uint32_t>();
  if (count > (1u << 20)) throw InputError(fmt::format("{}: corrupt checkpoint (implausible tensor count)", path));
  std::vector<Entry> entries;
  for (uint32_t i = 0; i < count; ++i) {
    Entry e;
    e.name = r.str();
    e.code = r.pod<uint8_t>();
    const uint32_t ndim = r.pod<uint32_t>();
    if (ndim > 8) throw InputError(fmt::format("{}: corrupt checkpoint (tensor {} has {} dims)", path, e.name, ndim));
    e.dims.resize(ndim);
    for (auto& d : e.dims) d = r.pod<int64_t>();
    e.bytes = r.pod<uint64_t>();
    e.at = r.position();
    r.skip(e.bytes);
    entries.push_back(std::move(e));
  }
  for (std::size_t i = 0; i < std::max<std::size_t>(entries.size(), into.size()); ++i) {
    if (i >= entries.size())
      throw InputError(fmt::format("{}: this run has tensor '{}' ({}), the checkpoint ends before it", dir,
                                   into[i].first, shape_text(into[i].second.sizes().vec())));
    if (i >= into.size())
      throw InputError(fmt::format("{}: the checkpoint has tensor '{}' ({}), this run does not", dir, entries[i].name,
                                   shape_text(entries[i].dims)));
    const Entry& e = entries[i];
    const at::Tensor& dst = into[i].second;
    if (e.name != into[i].first || e.dims != dst.sizes().vec())
      throw InputError(fmt::format("{}: the layer table differs: the checkpoint has '{}' ({}) where this run has "
                                   "'{}' ({})", dir, e.name, shape_text(e.dims), into[i].first,
                                   shape_text(dst.sizes().vec())));
    if (e.code != dtype_code(dst.scalar_type()) || e.bytes != static_cast<uint64_t>(dst.numel() * dst.element_size()))
      throw InputError(fmt::format("{}: checkpoint tensor '{}' does not match this run's type", path, e.name));
  }
  mismatch("layer table", hex64(h.layout_hash), hex64(expect.layout_hash));  // tensors agree: the table must too
  at::NoGradGuard no_grad;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    at::Tensor dst = into[i].second;
    at::Tensor host = at::empty(entries[i].dims, dst.options().device(at::kCPU));
    std::memcpy(host.data_ptr(), buf.data() + entries[i].at, entries[i].bytes);
    dst.copy_(host);
  }
  return h;
}

// ---- Checkpointer: Note [checkpoint generations].

namespace {

// The manifest: one JSON object (efsign/metrics.h's flat form).
std::string manifest_text(const CheckpointHeader& h, int64_t generation) {
  return JsonLine()
             .add("format", "efsign-checkpoint")
             .add("version", static_cast<int64_t>(kVersion))
             .add("generation", generation)
             .add("world_size", h.world_size)
             .add("model", h.model)
             .add("optimizer", h.optimizer)
             .add("layout_hash", hex64(h.layout_hash))
             .add("epoch", h.epoch)
             .add("step", h.step)
             .add("global_step", h.global_step)
             .str() + "\n";
}

int64_t field_int(const std::map<std::string, JsonValue>& m, const std::string& key, const std::string& file) {
  auto it = m.find(key);
  if (it == m.end() || it->second.is_string) throw InputError(fmt::format("{}: no number \"{}\" in the manifest", file, key));
  try {
    return std::stoll(it->second.text);
  } catch (const std::exception&) {
    throw InputError(fmt::format("{}: \"{}\" is not a number", file, key));
  }
}

// Rank 0's string reaches every rank.
std::string broadcast_string(HostCommunicator& comm, std::string s) {
  int64_t n = static_cast<int64_t>(s.size());
  comm.broadcast(as_writable_bytes(Span<int64_t>(&n, 1)), 0);
  s.resize(static_cast<std::size_t>(n));
  if (n) comm.broadcast(Span<std::byte>(reinterpret_cast<std::byte*>(s.data()), s.size()), 0);
  return s;
}

}  // namespace

Checkpointer::Checkpointer(std::string dir, HostCommunicator& comm, int keep)
    : dir_(std::move(dir)), comm_(comm), keep_(keep) {
  if (keep_ < 1) throw UsageError(fmt::format("--keep-checkpoints must be >= 1 (got {})", keep_));
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
}

void Checkpointer::start(bool resume, bool overwrite) {
  const int rank = comm_.rank();
  std::string err;
  try {
    detail::make_dirs(dir_, "checkpoint");
    detail::probe_writable(dir_, "checkpoint");
  } catch (const InputError& e) {
    err = e.what();
  }
  if (const std::string e = first_error(comm_, err); !e.empty()) throw InputError(e);
  if (resume) return;
  // A new run: a checkpoint already here is the user's work.
  std::string found;
  if (exists(dir_ + "/manifest.json")) found = fmt::format("{} holds a checkpoint", dir_);
  for (int64_t g : generations(dir_))
    if (found.empty() && exists(rank_file(gen_dir(dir_, g), rank)))
      found = fmt::format("{} holds checkpoint files ({})", dir_, rank_file(gen_dir(dir_, g), rank));
  if (found.empty() && exists(rank_file(dir_, rank))) found = fmt::format("{} holds a checkpoint", dir_);
  const std::string any = first_error(comm_, found);
  if (any.empty()) return;
  if (!overwrite)
    throw UsageError(any + ": pass --resume to continue it, or --overwrite-checkpoint to start afresh and replace it");
  for (int64_t g : generations(dir_)) remove_rank_files(gen_dir(dir_, g), rank);
  remove_rank_files(dir_, rank);
  first_error(comm_, "");  // every rank's files are gone before the folders and the manifest
  if (rank == 0) {
    ::unlink((dir_ + "/manifest.json").c_str());
    ::unlink((dir_ + "/manifest.json.tmp").c_str());
  }
  for (int64_t g : generations(dir_)) rmdir_quiet(gen_dir(dir_, g));
  current_ = 0;
}

CheckpointHeader Checkpointer::load(const CheckpointHeader& expect, const NamedTensors& into, bool* threads_changed) {
  const std::string manifest_path = dir_ + "/manifest.json";
  std::string text, err;
  if (comm_.rank() == 0) {
    std::ifstream in(manifest_path);
    if (!in) {
      err = fmt::format("{}: no checkpoint here ({})", manifest_path, os_error(errno));
    } else {
      std::getline(in, text);
      if (text.empty()) err = fmt::format("{}: empty manifest", manifest_path);
    }
  }
  if (const std::string e = first_error(comm_, err); !e.empty()) throw InputError(e);
  text = broadcast_string(comm_, text);
  CheckpointHeader h;
  int64_t generation = 0;
  try {
    std::map<std::string, JsonValue> m;
    if (!parse_flat_json(text, m)) throw InputError(fmt::format("{}: not a manifest", manifest_path));
    // A manifest without a generation is efsign 0.1's: the files lie in DIR itself.
    generation = m.count("generation") ? field_int(m, "generation", manifest_path) : 0;
    const std::string folder = generation > 0 ? gen_dir(dir_, generation) : dir_;
    h = read_checkpoint_file(rank_file(folder, expect.rank), expect, into);
    const int64_t want = field_int(m, "global_step", manifest_path);
    if (h.global_step != want || h.epoch != field_int(m, "epoch", manifest_path) ||
        h.step != field_int(m, "step", manifest_path))
      throw InputError(fmt::format("{}: holds global step {} (epoch {}, step {}), but the manifest names step {}",
                                   rank_file(folder, expect.rank), h.global_step, h.epoch, h.step, want));
  } catch (const InputError& e) {
    err = e.what();
  }
  if (const std::string e = first_error(comm_, err); !e.empty()) throw InputError(e);
  // Every rank loaded the same generation and position (checked, not assumed).
  int64_t mine[3] = {h.global_step, h.epoch, h.step};
  std::vector<int64_t> all(3 * comm_.size());
  comm_.allgather(as_bytes(Span<const int64_t>(mine, 3)), as_writable_bytes(Span<int64_t>(all)));
  for (int r = 1; r < comm_.size(); ++r)
    if (!std::equal(all.begin(), all.begin() + 3, all.begin() + 3 * r))
      throw InputError(fmt::format("{}: rank {} loaded global step {}, rank 0 step {}: not one checkpoint", dir_, r,
                                   all[3 * r], all[0]));
  // Loaded: what an interrupted save left behind can go now.
  for (int64_t g : generations(dir_)) {
    if (g > generation) remove_rank_files(gen_dir(dir_, g), comm_.rank());
    ::unlink((rank_file(gen_dir(dir_, g), comm_.rank()) + ".tmp").c_str());
  }
  if (comm_.rank() == 0) ::unlink((manifest_path + ".tmp").c_str());
  current_ = generation;
  if (threads_changed) *threads_changed = h.threads != 0 && h.threads != expect.threads;
  return h;
}

void Checkpointer::save(const CheckpointHeader& header, const NamedTensors& tensors) {
  const int rank = comm_.rank();
  const int64_t g = current_ + 1;
  const std::string folder = gen_dir(dir_, g);
  std::string err;
  try {
    if (::mkdir(folder.c_str(), 0755) != 0 && errno != EEXIST)
      throw InputError(fmt::format("{}: cannot create the checkpoint generation ({})", folder, os_error(errno)));
    detail::fsync_dir(dir_);
    write_checkpoint_file(rank_file(folder, rank), header, tensors);
  } catch (const InputError& e) {
    err = e.what();
  }
  std::string e = first_error(comm_, err);
  if (e.empty() && rank == 0) {  // the commit point: every rank's file is durable
    try {
      const std::string m = manifest_text(header, g);
      write_atomically(dir_ + "/manifest.json", std::vector<char>(m.begin(), m.end()));
    } catch (const InputError& ex) {
      err = ex.what();
    }
  }
  if (e.empty()) e = first_error(comm_, err);
  if (!e.empty()) {  // the previous generation stays current: this one goes
    remove_rank_files(folder, rank);
    first_error(comm_, "");
    rmdir_quiet(folder);
    throw InputError(e);
  }
  current_ = g;
  for (int64_t old : generations(dir_))
    if (old <= g - keep_) remove_rank_files(gen_dir(dir_, old), rank);
  // Every rank enters this collective, whatever its own listing shows (node-local
  // folders may differ): every rank's files are gone before the folders.
  first_error(comm_, "");
  for (int64_t old : generations(dir_))
    if (old <= g - keep_) rmdir_quiet(gen_dir(dir_, old));
}

}  // namespace efsign
