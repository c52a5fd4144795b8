// CIFAR-10 / CIFAR-100 binary readers on small files the test writes itself, and the
// crop + flip augmentation checked against an independent statement of the rule.
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "efsign/data.h"
#include "efsign/error.h"

using namespace efsign;

namespace {

std::string make_temp_dir() {
  char tmpl[] = "/tmp/efsign-test-cifar-XXXXXX";
  const char* d = mkdtemp(tmpl);
  REQUIRE(d != nullptr);
  return std::string(d);
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

// Pixel value of record `id` at (channel, y, x): distinct per plane so plane order shows.
uint8_t pixel(int id, int c, int y, int x) { return static_cast<uint8_t>(id * 7 + c * 85 + y * 3 + x); }

// One record: label bytes, then R plane, G plane, B plane (32x32 row-major each).
std::vector<uint8_t> record(const std::vector<uint8_t>& label_bytes, int id) {
  std::vector<uint8_t> r(label_bytes);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) r.push_back(pixel(id, c, y, x));
  return r;
}

void append(std::vector<uint8_t>& a, const std::vector<uint8_t>& b) { a.insert(a.end(), b.begin(), b.end()); }

// A CIFAR-10 tree with 2 records per file: file f (1..5 train, 6 test), record k has
// label (2f + k) % 10 and pixel id 10f + k.
void write_cifar10(const std::string& dir) {
  for (int f = 1; f <= 6; ++f) {
    std::vector<uint8_t> bytes;
    for (int k = 0; k < 2; ++k) append(bytes, record({static_cast<uint8_t>((2 * f + k) % 10)}, 10 * f + k));
    write_file(f <= 5 ? dir + "/data_batch_" + std::to_string(f) + ".bin" : dir + "/test_batch.bin", bytes);
  }
}

// A CIFAR-100 tree: train has 3 records (coarse 19 - k, fine 97 + k), test has 2.
void write_cifar100(const std::string& dir) {
  std::vector<uint8_t> train, test;
  for (int k = 0; k < 3; ++k) append(train, record({static_cast<uint8_t>(19 - k), static_cast<uint8_t>(97 + k)}, k));
  for (int k = 0; k < 2; ++k) append(test, record({static_cast<uint8_t>(k), static_cast<uint8_t>(50 + k)}, 5 + k));
  write_file(dir + "/train.bin", train);
  write_file(dir + "/test.bin", test);
}

void check_images(const at::Tensor& images, const std::vector<int>& ids) {
  REQUIRE(images.sizes() == at::IntArrayRef({static_cast<int64_t>(ids.size()), 3, 32, 32}));
  REQUIRE(images.scalar_type() == at::kByte);
  auto a = images.accessor<uint8_t, 4>();
  for (std::size_t i = 0; i < ids.size(); ++i)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; y += 5)
        for (int x = 0; x < 32; x += 3) REQUIRE(a[i][c][y][x] == pixel(ids[i], c, y, x));
}

template <class F>
std::string input_error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  FAIL("no InputError");
  return {};
}

}  // namespace

TEST_CASE("CIFAR-10 binary: labels, planes (R first), train/test split, metadata", "[cifar]") {
  const std::string dir = make_temp_dir();
  write_cifar10(dir);
  const DataSplit s = load_cifar10(dir);
  CHECK(s.train.name == "cifar10");
  CHECK(s.train.num_classes == 10);
  CHECK(s.train.size() == 10);
  CHECK(s.test.size() == 2);
  std::vector<int> ids;
  for (int f = 1; f <= 5; ++f)
    for (int k = 0; k < 2; ++k) {
      ids.push_back(10 * f + k);
      CHECK(s.train.labels[2 * (f - 1) + k].item<int64_t>() == (2 * f + k) % 10);
    }
  check_images(s.train.images, ids);
  check_images(s.test.images, {60, 61});
  CHECK(s.test.labels[0].item<int64_t>() == 2);
  CHECK(s.test.labels[1].item<int64_t>() == 3);
  CHECK(s.train.labels.scalar_type() == at::kLong);
  CHECK(s.train.mean == std::vector<float>{0.4914f, 0.4822f, 0.4465f});
  CHECK(s.train.std == std::vector<float>{0.2023f, 0.1994f, 0.2010f});
  // Pixel (c=0, y=0, x=1) of record 10 is R plane byte 1: 70 + 1.
  CHECK(s.train.images[0][0][0][1].item<uint8_t>() == 71);
  CHECK(s.train.images[0][1][0][0].item<uint8_t>() == 70 + 85);  // G plane starts 1024 bytes in
}

TEST_CASE("CIFAR-10 is found in the cifar-10-batches-bin subfolder", "[cifar]") {
  const std::string dir = make_temp_dir();
  const std::string sub = dir + "/cifar-10-batches-bin";
  REQUIRE(mkdir(sub.c_str(), 0755) == 0);
  write_cifar10(sub);
  CHECK(load_cifar10(dir).train.size() == 10);
  CHECK(load_cifar10(sub).test.size() == 2);
}

TEST_CASE("CIFAR-100 binary: the fine label is used, subfolder accepted", "[cifar]") {
  const std::string dir = make_temp_dir();
  write_cifar100(dir);
  for (const std::string& d : {dir, std::string()}) {
    std::string root = dir;
    if (d.empty()) {  // the same files under cifar-100-binary/
      root = make_temp_dir();
      const std::string sub = root + "/cifar-100-binary";
      REQUIRE(mkdir(sub.c_str(), 0755) == 0);
      write_cifar100(sub);
    }
    const DataSplit s = load_cifar100(root);
    CHECK(s.train.name == "cifar100");
    CHECK(s.train.num_classes == 100);
    REQUIRE(s.train.size() == 3);
    REQUIRE(s.test.size() == 2);
    for (int k = 0; k < 3; ++k) CHECK(s.train.labels[k].item<int64_t>() == 97 + k);
    for (int k = 0; k < 2; ++k) CHECK(s.test.labels[k].item<int64_t>() == 50 + k);
    check_images(s.train.images, {0, 1, 2});
    check_images(s.test.images, {5, 6});
  }
}

TEST_CASE("CIFAR readers: one-line InputErrors naming the file", "[cifar]") {
  SECTION("missing directory") {
    const std::string msg = input_error_of([] { load_cifar10("/nonexistent/efsign-cifar"); });
    CHECK_THAT(msg, Catch::Contains("/nonexistent/efsign-cifar") && Catch::Contains("data_batch_1..5.bin"));
    CHECK(msg.find('\n') == std::string::npos);
  }
  SECTION("missing file") {
    const std::string dir = make_temp_dir();
    write_cifar10(dir);
    REQUIRE(std::remove((dir + "/data_batch_3.bin").c_str()) == 0);
    CHECK_THAT(input_error_of([&] { load_cifar10(dir); }), Catch::Contains(dir + "/data_batch_3.bin"));
    REQUIRE(std::remove((dir + "/test_batch.bin").c_str()) == 0);
    write_file(dir + "/data_batch_3.bin", record({1}, 0));
    CHECK_THAT(input_error_of([&] { load_cifar10(dir); }), Catch::Contains(dir + "/test_batch.bin"));
    const std::string empty = make_temp_dir();
    const std::string msg = input_error_of([&] { load_cifar100(empty); });
    CHECK_THAT(msg, Catch::Contains("train.bin") && Catch::Contains("cifar-100-binary"));
    write_cifar100(empty);
    REQUIRE(std::remove((empty + "/test.bin").c_str()) == 0);
    CHECK_THAT(input_error_of([&] { load_cifar100(empty); }), Catch::Contains(empty + "/test.bin"));
  }
  SECTION("truncated record") {
    const std::string dir = make_temp_dir();
    write_cifar10(dir);
    std::vector<uint8_t> bytes = record({1}, 0);
    append(bytes, record({2}, 1));
    bytes.resize(bytes.size() - 100);
    write_file(dir + "/data_batch_2.bin", bytes);
    const std::string msg = input_error_of([&] { load_cifar10(dir); });
    CHECK_THAT(msg, Catch::Contains(dir + "/data_batch_2.bin") && Catch::Contains("not a multiple") &&
                        Catch::Contains("6046 bytes") && Catch::Contains("3073-byte record"));
    CHECK(msg.find('\n') == std::string::npos);
    // A CIFAR-10 file read as CIFAR-100 (3073-byte records vs 3074): wrong size.
    const std::string d100 = make_temp_dir();
    write_cifar100(d100);
    write_file(d100 + "/train.bin", record({1}, 0));
    CHECK_THAT(input_error_of([&] { load_cifar100(d100); }), Catch::Contains("3074-byte record"));
  }
  SECTION("empty file") {
    const std::string dir = make_temp_dir();
    write_cifar10(dir);
    write_file(dir + "/test_batch.bin", {});
    CHECK_THAT(input_error_of([&] { load_cifar10(dir); }),
               Catch::Contains(dir + "/test_batch.bin") && Catch::Contains("empty"));
  }
  SECTION("label out of range") {
    const std::string dir = make_temp_dir();
    write_cifar10(dir);
    std::vector<uint8_t> bytes = record({3}, 0);
    append(bytes, record({10}, 1));
    write_file(dir + "/data_batch_5.bin", bytes);
    CHECK_THAT(input_error_of([&] { load_cifar10(dir); }),
               Catch::Contains(dir + "/data_batch_5.bin") && Catch::Contains("label 10"));
    const std::string d100 = make_temp_dir();
    write_cifar100(d100);
    write_file(d100 + "/test.bin", record({5, 100}, 0));
    CHECK_THAT(input_error_of([&] { load_cifar100(d100); }), Catch::Contains("label 100"));
  }
}

namespace {

// The rule, restated independently: pad by 4 with zeros, take the 32x32 window at
// (oy, ox) in 0..8, optionally mirror left-right.
at::Tensor window(const at::Tensor& img /*[3,32,32] u8*/, int64_t oy, int64_t ox, bool flip) {
  at::Tensor padded = at::constant_pad_nd(img, {4, 4, 4, 4}, 0);  // [3, 40, 40]
  at::Tensor w = padded.narrow(1, oy, 32).narrow(2, ox, 32);
  return (flip ? w.flip({2}) : w).contiguous();
}

// Which (oy, ox, flip) produced `out` from `img`; -1 if none. With the test image
// below every candidate window is distinct, so at most one matches.
int which_window(const at::Tensor& img, const at::Tensor& out) {
  for (int oy = 0; oy < 9; ++oy)
    for (int ox = 0; ox < 9; ++ox)
      for (int f = 0; f < 2; ++f)
        if (at::equal(window(img, oy, ox, f == 1), out)) return (oy * 9 + ox) * 2 + f;
  return -1;
}

// R = row + 1, G = column + 1, B = 200: no zeros, every window distinct.
at::Tensor test_image() {
  at::Tensor img = at::empty({3, 32, 32}, at::TensorOptions().dtype(at::kByte));
  auto a = img.accessor<uint8_t, 3>();
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      a[0][y][x] = static_cast<uint8_t>(y + 1);
      a[1][y][x] = static_cast<uint8_t>(x + 1);
      a[2][y][x] = 200;
    }
  return img;
}

}  // namespace

TEST_CASE("crop + flip: each output is a flipped-or-not window of the zero-padded image", "[cifar][augment]") {
  const at::Tensor img = test_image();
  at::Tensor batch = at::stack({img, img.flip({1}), img, img.flip({2}).contiguous()}).contiguous();
  const at::Tensor before = batch.clone();
  const at::Tensor out = augment_crop_flip(batch, 12345);
  CHECK(at::equal(batch, before));  // input untouched
  REQUIRE(out.sizes() == batch.sizes());
  REQUIRE(out.scalar_type() == at::kByte);
  for (int64_t i = 0; i < out.size(0); ++i) {
    const at::Tensor src = batch[i].contiguous();
    CHECK(which_window(src, out[i].contiguous()) >= 0);
  }
  CHECK(at::equal(out, augment_crop_flip(batch, 12345)));  // deterministic in the seed
  SplitMix64 rng(12345);
  CHECK(at::equal(out, augment_crop_flip(batch, rng)));  // the seed overload is SplitMix64(seed)
  // Draw order: dy = below(9), dx = below(9), flip = below(2) for image 0.
  SplitMix64 r2(12345);
  const int64_t oy = static_cast<int64_t>(r2.below(9)), ox = static_cast<int64_t>(r2.below(9));
  const bool flip = r2.below(2) == 1;
  CHECK(at::equal(out[0].contiguous(), window(img, oy, ox, flip)));
  // Exact pixels for image 0: zero padding shows up as zeros (before normalisation).
  auto a = out.accessor<uint8_t, 4>();
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const int64_t sy = y + oy - 4, sx = (flip ? 31 - x : x) + ox - 4;
      const bool inside = sy >= 0 && sy < 32 && sx >= 0 && sx < 32;
      REQUIRE(a[0][0][y][x] == (inside ? sy + 1 : 0));
      REQUIRE(a[0][1][y][x] == (inside ? sx + 1 : 0));
      REQUIRE(a[0][2][y][x] == (inside ? 200 : 0));
    }
}

TEST_CASE("crop + flip: over many seeds all 81 offsets and both flips occur", "[cifar][augment]") {
  const at::Tensor img = test_image();
  const at::Tensor one = img.unsqueeze(0).contiguous();
  std::set<int> seen;
  int unflipped_centre = 0;
  for (uint64_t seed = 0; seed < 1500; ++seed) {
    const int w = which_window(img, augment_crop_flip(one, seed)[0].contiguous());
    REQUIRE(w >= 0);
    seen.insert(w);
    if (w == (4 * 9 + 4) * 2) ++unflipped_centre;
  }
  CHECK(seen.size() == 162);  // 81 offsets x {no flip, flip}
  CHECK(unflipped_centre > 0);
}
