#include <ATen/ATen.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "efsign/data.h"
#include "efsign/error.h"

namespace efsign {
namespace {

struct GzFile {
  gzFile f = nullptr;
  explicit GzFile(const std::string& path) : f(gzopen(path.c_str(), "rb")) {}
  ~GzFile() {
    if (f) gzclose(f);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
};

// Reads exactly n bytes or throws InputError naming the file.
void read_exact(GzFile& gz, const std::string& path, void* dst, int64_t n, const char* what) {
  auto* out = static_cast<unsigned char*>(dst);
  int64_t done = 0;
  while (done < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n - done, 1 << 30));
    const int got = gzread(gz.f, out + done, chunk);
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(gz.f, &err);
      throw InputError(fmt::format("{}: cannot read {} ({})", path, what, msg ? msg : "zlib error"));
    }
    if (got == 0)
      throw InputError(fmt::format("{}: truncated file: {} needs {} bytes, only {} present", path, what, n, done));
    done += got;
  }
}

}  // namespace

at::Tensor read_idx(const std::string& path, int expected_rank) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw InputError(fmt::format("{}: {}", path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    throw InputError(fmt::format("{}: {}", path, S_ISDIR(st.st_mode) ? std::strerror(EISDIR) : "not a regular file"));
  GzFile gz(path);
  if (!gz.f) throw InputError(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  unsigned char magic[4];
  read_exact(gz, path, magic, 4, "the IDX header");
  if (magic[0] != 0 || magic[1] != 0)
    throw InputError(fmt::format("{}: not an IDX file (bad magic {:02x}{:02x}{:02x}{:02x})", path, magic[0],
                                 magic[1], magic[2], magic[3]));
  if (magic[2] != 0x08) throw InputError(fmt::format("{}: IDX element type 0x{:02x} is not uint8", path, magic[2]));
  const int rank = magic[3];
  if (rank != expected_rank)
    throw InputError(fmt::format("{}: IDX file has {} dimensions, expected {}", path, rank, expected_rank));
  std::vector<int64_t> dims(rank);
  int64_t total = 1;
  for (int i = 0; i < rank; ++i) {
    unsigned char b[4];
    read_exact(gz, path, b, 4, "the IDX dimensions");
    dims[i] = (int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) | (int64_t{b[2]} << 8) | int64_t{b[3]};
    if (dims[i] <= 0 || dims[i] > (int64_t{1} << 31)) throw InputError(fmt::format("{}: bad dimension {}", path, dims[i]));
    total *= dims[i];
    if (total > (int64_t{1} << 36)) throw InputError(fmt::format("{}: implausibly large ({} elements)", path, total));
  }
  at::Tensor t = at::empty(dims, at::TensorOptions().dtype(at::kByte));
  read_exact(gz, path, t.data_ptr<uint8_t>(), total, "the IDX data");
  unsigned char extra;
  if (gzread(gz.f, &extra, 1) > 0)
    throw InputError(fmt::format("{}: file is longer than its header says ({} elements)", path, total));
  return t;
}

// The file `stem`.gz or `stem` in `dir`. Anything but "no such file" (a folder that may
// not be searched, a symbolic link loop) is reported with the OS's reason.
static std::string find_file(const std::string& dir, const std::string& stem) {
  for (const std::string& cand : {dir + "/" + stem + ".gz", dir + "/" + stem}) {
    struct stat st {};
    if (stat(cand.c_str(), &st) == 0) return cand;
    if (errno != ENOENT) throw InputError(fmt::format("{}: {}", cand, std::strerror(errno)));
  }
  throw InputError(fmt::format("{}: no {}(.gz) here", dir, stem));
}

DataSplit load_fashion_mnist(const std::string& dir) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) throw InputError(fmt::format("data directory {}: {}", dir, std::strerror(errno)));
    throw InputError(fmt::format("data directory {} does not exist (install the Debian package "
                                 "dataset-fashion-mnist or pass --data-dir)",
                                 dir));
  }
  if (!S_ISDIR(st.st_mode))
    throw InputError(fmt::format("data directory {}: {} (--data-dir names the folder that holds the IDX files)", dir,
                                 std::strerror(ENOTDIR)));
  auto load = [&](const std::string& img, const std::string& lab) {
    const std::string img_path = find_file(dir, img), lab_path = find_file(dir, lab);
    at::Tensor images = read_idx(img_path, 3);
    at::Tensor labels = read_idx(lab_path, 1);
    if (images.size(0) != labels.size(0))
      throw InputError(fmt::format("{} has {} images but {} has {} labels", img_path, images.size(0), lab_path,
                                   labels.size(0)));
    if (labels.max().item<uint8_t>() >= 10) throw InputError(fmt::format("{}: label out of range 0..9", lab_path));
    Dataset d;
    d.name = "fashion-mnist";
    d.images = images.unsqueeze(1).contiguous();
    d.labels = labels.to(at::kLong);
    d.num_classes = 10;
    d.mean = {0.2860f};
    d.std = {0.3530f};
    return d;
  };
  DataSplit s;
  s.train = load("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
  s.test = load("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
  return s;
}

}  // namespace efsign
