// CIFAR-10 / CIFAR-100 binary readers and the crop + flip augmentation.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "efsign/data.h"
#include "efsign/error.h"

namespace efsign {
namespace {

constexpr int64_t kPixels = 3 * 32 * 32;

// 0 when `path` exists, else stat's errno.
int stat_error(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? 0 : errno;
}

struct Format {
  const char* name;       // "cifar10"
  const char* title;      // "CIFAR-10"
  const char* subdir;     // "cifar-10-batches-bin"
  const char* expected;   // what the directory must hold, for messages
  int64_t label_bytes;    // 1 or 2
  int64_t label_offset;   // which label byte to use
  int64_t num_classes;
};

const Format kCifar10{"cifar10", "CIFAR-10", "cifar-10-batches-bin",
                      "data_batch_1..5.bin and test_batch.bin", 1, 0, 10};
const Format kCifar100{"cifar100", "CIFAR-100", "cifar-100-binary", "train.bin and test.bin", 2, 1, 100};

// `dir` itself if it holds `probe`, else dir/subdir if that does; otherwise an
// InputError naming the missing file and what is expected.
// Anything but "no such file" (a folder that may not be searched, a symbolic link loop,
// a file where a folder is expected) is reported with the OS's reason.
std::string resolve_dir(const std::string& dir, const Format& f, const std::string& probe) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) throw InputError(fmt::format("{} data directory {}: {}", f.title, dir, std::strerror(errno)));
    throw InputError(fmt::format("{} data directory {} does not exist (expected the binary version: {}, "
                                 "directly or in {}/)",
                                 f.title, dir, f.expected, f.subdir));
  }
  if (!S_ISDIR(st.st_mode))
    throw InputError(fmt::format("{} data directory {}: {} (expected the folder that holds {})", f.title, dir,
                                 std::strerror(ENOTDIR), f.expected));
  const int direct = stat_error(dir + "/" + probe);
  if (direct == 0) return dir;
  if (direct != ENOENT) throw InputError(fmt::format("{}/{}: {}", dir, probe, std::strerror(direct)));
  const std::string sub = dir + "/" + f.subdir;
  const int nested = stat_error(sub + "/" + probe);
  if (nested == 0) return sub;
  if (nested != ENOENT) throw InputError(fmt::format("{}/{}: {}", sub, probe, std::strerror(nested)));
  throw InputError(fmt::format("{}/{}: no such file (expected the {} binary version: {}, directly in {} or in {}/)",
                               dir, probe, f.title, f.expected, dir, f.subdir));
}

// A file the data set needs: "no such file" says what is expected; any other failure
// gives the OS's reason.
void require_file(const std::string& path, const Format& f) {
  const int err = stat_error(path);
  if (err == ENOENT)
    throw InputError(fmt::format("{}: no such file (expected the {} binary version: {})", path, f.title, f.expected));
  if (err != 0) throw InputError(fmt::format("{}: {}", path, std::strerror(err)));
}

// Appends the records of one file to images/labels.
void read_records(const std::string& path, const Format& f, std::vector<uint8_t>& images,
                  std::vector<int64_t>& labels) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    throw InputError(fmt::format("{}: {} (expected a {} binary batch file)", path, std::strerror(errno), f.title));
  if (!S_ISREG(st.st_mode))
    throw InputError(fmt::format("{}: {}", path, S_ISDIR(st.st_mode) ? std::strerror(EISDIR) : "not a regular file"));
  const int64_t record = f.label_bytes + kPixels;
  const int64_t size = static_cast<int64_t>(st.st_size);
  if (size == 0) throw InputError(fmt::format("{}: empty file (expected {}-byte {} records)", path, record, f.title));
  if (size % record != 0)
    throw InputError(fmt::format("{}: truncated or wrong-size file: {} bytes is not a multiple of the {}-byte record",
                                 path, size, record));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  std::vector<uint8_t> buf(static_cast<std::size_t>(size));
  in.read(reinterpret_cast<char*>(buf.data()), size);
  if (in.gcount() != size)
    throw InputError(fmt::format("{}: read {} of {} bytes", path, static_cast<int64_t>(in.gcount()), size));
  const int64_t n = size / record;
  const std::size_t base = images.size();
  images.resize(base + static_cast<std::size_t>(n * kPixels));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* rec = buf.data() + i * record;
    const int64_t label = rec[f.label_offset];
    if (label >= f.num_classes)
      throw InputError(fmt::format("{}: record {} has label {}, out of range 0..{}", path, i, label,
                                   f.num_classes - 1));
    labels.push_back(label);
    std::memcpy(images.data() + base + i * kPixels, rec + f.label_bytes, kPixels);
  }
}

Dataset load_files(const std::vector<std::string>& paths, const Format& f) {
  std::vector<uint8_t> images;
  std::vector<int64_t> labels;
  for (const auto& p : paths) read_records(p, f, images, labels);
  const int64_t n = static_cast<int64_t>(labels.size());
  Dataset d;
  d.name = f.name;
  d.images = at::empty({n, 3, 32, 32}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(d.images.data_ptr<uint8_t>(), images.data(), images.size());
  d.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong));
  std::memcpy(d.labels.data_ptr<int64_t>(), labels.data(), labels.size() * sizeof(int64_t));
  d.num_classes = f.num_classes;
  d.mean = {0.4914f, 0.4822f, 0.4465f};
  d.std = {0.2023f, 0.1994f, 0.2010f};
  return d;
}

}  // namespace

DataSplit load_cifar10(const std::string& dir) {
  const std::string root = resolve_dir(dir, kCifar10, "data_batch_1.bin");
  std::vector<std::string> train;
  for (int i = 1; i <= 5; ++i) {
    const std::string p = fmt::format("{}/data_batch_{}.bin", root, i);
    require_file(p, kCifar10);
    train.push_back(p);
  }
  const std::string test = root + "/test_batch.bin";
  require_file(test, kCifar10);
  DataSplit s;
  s.train = load_files(train, kCifar10);
  s.test = load_files({test}, kCifar10);
  return s;
}

DataSplit load_cifar100(const std::string& dir) {
  const std::string root = resolve_dir(dir, kCifar100, "train.bin");
  const std::string test = root + "/test.bin";
  require_file(test, kCifar100);
  DataSplit s;
  s.train = load_files({root + "/train.bin"}, kCifar100);
  s.test = load_files({test}, kCifar100);
  return s;
}

at::Tensor augment_crop_flip(const at::Tensor& images_u8, SplitMix64& rng) {
  constexpr int64_t kPad = 4;
  if (images_u8.dim() != 4 || images_u8.scalar_type() != at::kByte)
    throw UsageError("augment_crop_flip needs uint8 images [B, C, H, W]");
  const at::Tensor src = images_u8.contiguous();
  const int64_t b = src.size(0), c = src.size(1), h = src.size(2), w = src.size(3);
  at::Tensor out = at::zeros_like(src);
  const uint8_t* in = src.data_ptr<uint8_t>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < b; ++i) {
    // Crop window [dy, dy+h) x [dx, dx+w) of the padded image = source rows/cols shifted by
    // (dy - pad, dx - pad); outside the source the pixel stays 0.
    const int64_t dy = static_cast<int64_t>(rng.below(2 * kPad + 1)) - kPad;
    const int64_t dx = static_cast<int64_t>(rng.below(2 * kPad + 1)) - kPad;
    const bool flip = rng.below(2) == 1;
    for (int64_t ch = 0; ch < c; ++ch) {
      const uint8_t* plane = in + (i * c + ch) * h * w;
      uint8_t* oplane = dst + (i * c + ch) * h * w;
      for (int64_t y = 0; y < h; ++y) {
        const int64_t sy = y + dy;
        if (sy < 0 || sy >= h) continue;
        for (int64_t x = 0; x < w; ++x) {
          const int64_t sx = x + dx;
          if (sx < 0 || sx >= w) continue;
          oplane[y * w + (flip ? w - 1 - x : x)] = plane[sy * w + sx];
        }
      }
    }
  }
  return out;
}

at::Tensor augment_crop_flip(const at::Tensor& images_u8, uint64_t seed) {
  SplitMix64 rng(seed);
  return augment_crop_flip(images_u8, rng);
}

}  // namespace efsign
