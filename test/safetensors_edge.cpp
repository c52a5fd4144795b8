// safetensors_edge OUT_DIR: what save_safetensors must handle that efsign's models never
// give it, and its failure paths.
//
// Writes OUT_DIR/edge.safetensors: an empty tensor, a 0-dim scalar, a non-contiguous view,
// tensors of odd byte sizes before wider dtypes, every supported dtype, a name and metadata
// that need JSON escaping. test/safetensors_check.py --expect edge reads it back (its EDGE
// table lists the same tensors and values).
//
// Then the failures: each must throw InputError (or Error for a caller's mistake) with the
// OS's reason and leave neither a new file nor a .tmp behind, and a failed write over an
// existing file must leave that file as it was (atomic replacement).
// Prints "ok ..." / "FAIL ..." per check; exit 0 when all pass, 1 otherwise.
#include <torch/torch.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <string>

#include "efsign/error.h"
#include "efsign/safetensors.h"

namespace {

int failures = 0;

void check(const std::string& what, bool ok, const std::string& detail = "") {
  std::cout << (ok ? "ok   " : "FAIL ") << what << (ok || detail.empty() ? "" : ": " + detail) << "\n";
  if (!ok) ++failures;
}

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// Runs `write`; checks that it throws E with `reason` in its message, that no `path`.tmp is
// left, and `intact()` (what must still hold: no new file, the old file unchanged, ...).
template <typename E>
void expect_failure(const std::string& what, const std::string& path, const std::string& reason,
                    const std::function<void()>& write, const std::string& intact_what,
                    const std::function<bool()>& intact) {
  std::string msg;
  bool thrown = false;
  try {
    write();
  } catch (const E& e) {
    thrown = true;
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("wrong exception type: ") + e.what();
  }
  check(what + ": an error with the reason (" + msg + ")", thrown && msg.find(reason) != std::string::npos,
        "wanted '" + reason + "'");
  check(what + ": no .tmp left", !exists(path + ".tmp"));
  check(what + ": " + intact_what, intact());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: safetensors_edge OUT_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  using efsign::save_safetensors;
  const auto f32 = torch::kFloat32;

  // ---- The edge file (test/safetensors_check.py EDGE lists the same).
  Named t;
  t.emplace_back("odd", torch::tensor({1.5f, -2.0f, 3.0f}));
  t.emplace_back("scalar", torch::scalar_tensor(7, torch::kInt64));
  t.emplace_back("empty", torch::zeros({0, 4}, f32));
  t.emplace_back("transposed", torch::arange(6, f32).view({2, 3}).t());  // not contiguous
  t.emplace_back("f64", torch::tensor({0.1, -1e300}, torch::kFloat64).view({2, 1}));
  t.emplace_back("i32", torch::tensor({-1, 0, 2147483647}, torch::kInt32));
  t.emplace_back("u8", torch::tensor({0, 1, 127, 128, 255}, torch::kInt32).to(torch::kUInt8));
  t.emplace_back("i8", torch::tensor({-128, 127}, torch::kInt32).to(torch::kInt8));
  t.emplace_back("i16", torch::tensor({-32768, 32767}, torch::kInt32).to(torch::kInt16));
  t.emplace_back("f16", torch::tensor({1.0f, -0.5f, 65504.0f}).to(torch::kFloat16));
  t.emplace_back("bf16", torch::tensor({1.0f, -2.0f}).to(torch::kBFloat16));
  t.emplace_back("bool", torch::tensor({1, 0, 1}, torch::kInt32).to(torch::kBool));
  t.emplace_back("we\"ird\\name\t\x01\xc3\xa9", torch::tensor({42.0f}));
  t.emplace_back("layer.0.weight", torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({2, 2}));
  const std::map<std::string, std::string> meta{{"quote", "a\"b"},         {"backslash", "c\\d"},
                                                {"newline", "e\nf"},       {"control", "\x01\x1f"},
                                                {"utf8", "\xc3\xa9\xe2\x82\xac"}, {"empty", ""}};
  const std::string edge = dir + "/edge.safetensors";
  try {
    save_safetensors(edge, t, meta);
    check("edge.safetensors written", exists(edge) && !exists(edge + ".tmp"));
  } catch (const std::exception& e) {
    check("edge.safetensors written", false, e.what());
  }

  // ---- Failures.
  const Named small{{"w", torch::ones({4}, f32)}};
  const std::string none = dir + "/none/x.safetensors";
  expect_failure<efsign::InputError>(
      "a missing folder", none, std::strerror(ENOENT), [&] { save_safetensors(none, small); }, "no file",
      [&] { return !exists(none); });
  const std::string folder = dir + "/a-folder";
  ::mkdir(folder.c_str(), 0755);
  expect_failure<efsign::InputError>(
      "the target is a folder (the rename fails after the write)", folder, std::strerror(EISDIR),
      [&] { save_safetensors(folder, small); }, "still an empty folder",
      [&] { return exists(folder + "/.") && !exists(folder + "/w"); });

  // A write that fails half way (the file size limit, as a full disk would): the previous
  // file stays, and the .tmp goes.
  const std::string keep = dir + "/keep.safetensors";
  save_safetensors(keep, small);
  const std::string before = slurp(keep);
  ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing us
  struct rlimit old {};
  ::getrlimit(RLIMIT_FSIZE, &old);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  ::setrlimit(RLIMIT_FSIZE, &lim);
  expect_failure<efsign::InputError>(
      "a write that fails half way over an existing file", keep, std::strerror(EFBIG),
      [&] { save_safetensors(keep, {{"big", torch::ones({1 << 16}, f32)}}); }, "the old file unchanged",
      [&] { return slurp(keep) == before; });
  ::setrlimit(RLIMIT_FSIZE, &old);

  // A caller's mistakes: the format has no room for them.
  // A caller's mistakes the format has no room for.
  auto refused = [&](const std::string& what, const std::string& reason, const Named& tensors) {
    const std::string path = dir + "/refused.safetensors";
    expect_failure<efsign::Error>(
        what, path, reason, [&] { save_safetensors(path, tensors); }, "no file", [&] { return !exists(path); });
  };
  refused("two tensors with one name", "given twice", {{"w", torch::ones({1})}, {"w", torch::ones({2})}});
  refused("a tensor named __metadata__", "__metadata__", {{"__metadata__", torch::ones({1})}});
  refused("an unsupported dtype", "unsupported dtype", {{"c", torch::ones({2}, torch::kComplexFloat)}});
  std::cout << (failures ? "FAILED" : "all passed") << "\n";
  return failures ? 1 : 0;
}
