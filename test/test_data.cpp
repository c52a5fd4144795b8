// Data: IDX files the test writes itself (raw and gzip), sharding, synthetic data.
#include <catch2/catch.hpp>
#include <torch/torch.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <unistd.h>

#include "efsign/data.h"
#include "efsign/error.h"

using namespace efsign;

namespace {

std::string temp_dir() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/efsign-test-data-XXXXXX";
    const char* d = mkdtemp(tmpl);
    REQUIRE(d != nullptr);
    return std::string(d);
  }();
  return dir;
}

std::vector<uint8_t> idx_bytes(const std::vector<int32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b{0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (int32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>((d >> s) & 0xff));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes, bool gz) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
}

// A small Fashion-MNIST-shaped directory: n train and m test images of 28x28.
std::string make_fake_mnist(const std::string& name, int n, int m, bool gz) {
  const std::string dir = temp_dir() + "/" + name;
  REQUIRE(system(("mkdir -p " + dir).c_str()) == 0);
  const std::string ext = gz ? ".gz" : "";
  auto write_set = [&](const std::string& prefix, int count) {
    std::vector<uint8_t> px(count * 28 * 28), lab(count);
    for (int i = 0; i < count; ++i) {
      lab[i] = static_cast<uint8_t>(i % 10);
      for (int k = 0; k < 28 * 28; ++k) px[i * 784 + k] = static_cast<uint8_t>((i + k) % 256);
    }
    write_file(dir + "/" + prefix + "-images-idx3-ubyte" + ext, idx_bytes({count, 28, 28}, px), gz);
    write_file(dir + "/" + prefix + "-labels-idx1-ubyte" + ext, idx_bytes({count}, lab), gz);
  };
  write_set("train", n);
  write_set("t10k", m);
  return dir;
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  return "<no InputError>";
}

}  // namespace

TEST_CASE("IDX reader reads gzip and raw files written in the real format", "[data]") {
  for (bool gz : {true, false}) {
    const auto dir = make_fake_mnist(gz ? "gz" : "raw", 50, 20, gz);
    const DataSplit s = load_fashion_mnist(dir);
    CHECK(s.train.size() == 50);
    CHECK(s.test.size() == 20);
    CHECK(s.train.images.sizes() == at::IntArrayRef({50, 1, 28, 28}));
    CHECK(s.train.labels[13].item<int64_t>() == 3);
    CHECK(s.train.images[2][0][0][5].item<uint8_t>() == 7);
  }
}

TEST_CASE("truncated, foreign and inconsistent IDX files are one-line InputErrors naming the file", "[data]") {
  const std::string d = temp_dir();
  auto full = idx_bytes({10, 28, 28}, std::vector<uint8_t>(10 * 784, 1));
  auto cut = full;
  cut.resize(full.size() - 100);
  write_file(d + "/cut.gz", cut, true);
  const std::string e1 = error_of([&] { read_idx(d + "/cut.gz", 3); });
  CHECK_THAT(e1, Catch::Contains("truncated") && Catch::Contains("cut.gz"));
  write_file(d + "/header.gz", std::vector<uint8_t>(full.begin(), full.begin() + 6), true);
  CHECK_THAT(error_of([&] { read_idx(d + "/header.gz", 3); }), Catch::Contains("truncated"));
  write_file(d + "/long", [&] { auto b = full; b.push_back(0); return b; }(), false);
  CHECK_THAT(error_of([&] { read_idx(d + "/long", 3); }), Catch::Contains("longer than its header"));
  write_file(d + "/text", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '\n'}, false);
  CHECK_THAT(error_of([&] { read_idx(d + "/text", 3); }), Catch::Contains("not an IDX file"));
  write_file(d + "/rank1", idx_bytes({4}, {1, 2, 3, 4}), false);
  CHECK_THAT(error_of([&] { read_idx(d + "/rank1", 3); }), Catch::Contains("dimensions"));
  CHECK_THAT(error_of([&] { read_idx(d + "/does-not-exist", 3); }), Catch::Contains("No such file"));
  CHECK_THAT(error_of([&] { load_fashion_mnist(d + "/no-dir"); }), Catch::Contains("does not exist"));
  // Label and image counts disagree.
  const auto dir = make_fake_mnist("mismatch", 30, 10, true);
  write_file(dir + "/train-labels-idx1-ubyte.gz", idx_bytes({29}, std::vector<uint8_t>(29, 1)), true);
  CHECK_THAT(error_of([&] { load_fashion_mnist(dir); }), Catch::Contains("30 images but"));
  for (const auto& msg : {e1}) CHECK(msg.find('\n') == std::string::npos);
}

TEST_CASE("sharding: every sample exactly once per epoch across ranks, same steps on every rank", "[data]") {
  for (int world : {1, 2, 3, 4}) {
    for (int64_t n : {1000, 1001, 64 * 3 + 1}) {
      const int64_t batch = 64;
      std::multiset<int64_t> seen;
      int64_t steps = -1;
      for (int r = 0; r < world; ++r) {
        EpochSharder s(n, world, r, batch, 7);
        if (steps < 0) steps = s.steps_per_epoch();
        CHECK(s.steps_per_epoch() == steps);
        for (int64_t k = 0; k < s.steps_per_epoch(); ++k) {
          const auto b = s.batch(0, k);
          CHECK(!b.empty());
          CHECK(static_cast<int64_t>(b.size()) <= batch);
          seen.insert(b.begin(), b.end());
        }
      }
      INFO("world " << world << " n " << n);
      CHECK(steps == (n + batch * world - 1) / (batch * world));
      std::set<int64_t> distinct(seen.begin(), seen.end());
      CHECK(static_cast<int64_t>(distinct.size()) == n);       // every sample used...
      CHECK(static_cast<int64_t>(seen.size()) <= n + world);   // ...once, bar the top-up of a tiny last batch
    }
  }
  // A new order each epoch, the same order for the same seed.
  CHECK(EpochSharder::permutation(100, 1, 0) != EpochSharder::permutation(100, 1, 1));
  CHECK(EpochSharder::permutation(100, 1, 0) == EpochSharder::permutation(100, 1, 0));
  CHECK(EpochSharder::permutation(100, 1, 0) != EpochSharder::permutation(100, 2, 0));
}

TEST_CASE("synthetic data is deterministic and batches are normalised", "[data]") {
  const DataSplit a = make_synthetic(100, 10, 1, 28, 28, 10, 3);
  const DataSplit b = make_synthetic(100, 10, 1, 28, 28, 10, 3);
  CHECK(a.train.images.equal(b.train.images));
  CHECK(a.train.labels.equal(b.train.labels));
  CHECK(!a.train.images.equal(make_synthetic(100, 10, 1, 28, 28, 10, 4).train.images));
  std::vector<int64_t> idx{5, 2};
  const Batch batch = make_batch(a.train, Span<const int64_t>(idx));
  CHECK(batch.images.sizes() == at::IntArrayRef({2, 1, 28, 28}));
  const float raw = a.train.images[5][0][3][4].item<uint8_t>();
  CHECK(batch.images[0][0][3][4].item<float>() == Approx((raw / 255.0f - 0.5f) / 0.25f));
  CHECK(batch.labels[1].item<int64_t>() == a.train.labels[2].item<int64_t>());
}
