// libFuzzer targets for the data readers (bench/fuzz.sh builds and runs them).
// Each input is written to a file and read through the real reader (zlib included):
// any InputError is an accepted outcome; a crash, hang, leak or ASan report is a bug.
//   EFSIGN_FUZZ_TARGET=idx | cifar10 | cifar100 | checkpoint selects the reader (default idx).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <ATen/ATen.h>

#include "efsign/checkpoint.h"
#include "efsign/data.h"
#include "efsign/error.h"

namespace {

std::string scratch_dir() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/efsign-fuzz-XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (!d) std::abort();
    return std::string(d);
  }();
  return dir;
}

void write(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
}

}  // namespace

// EFSIGN_FUZZ_WRITE_SEED=PATH: write a valid checkpoint there first (a seed input).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seed = std::getenv("EFSIGN_FUZZ_WRITE_SEED")) {
    efsign::CheckpointHeader h;
    h.model = "mlp";
    h.optimizer = "ef-signsgd";
    const std::string dir = scratch_dir() + "/seed";
    efsign::save_checkpoint(dir, h, {{"param.w", at::ones({4, 3})}, {"opt.ef_scale", at::ones({2})}});
    std::rename((dir + "/rank-0.ckpt").c_str(), seed);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* env = std::getenv("EFSIGN_FUZZ_TARGET");
  const std::string target = env ? env : "idx";
  const std::string dir = scratch_dir();
  try {
    if (target == "idx") {
      write(dir + "/input", data, size);
      if (size > 0) efsign::read_idx(dir + "/input", data[0] % 4);  // also vary the expected rank
    } else if (target == "checkpoint") {
      write(dir + "/rank-0.ckpt", data, size);
      efsign::CheckpointHeader expect;
      expect.model = "mlp";
      expect.optimizer = "ef-signsgd";
      static const efsign::NamedTensors into{{"param.w", at::zeros({4, 3})}, {"opt.ef_scale", at::zeros({2})}};
      efsign::load_checkpoint(dir, expect, into);
    } else if (target == "cifar10") {
      for (int b = 1; b <= 5; ++b) write(dir + "/data_batch_" + std::to_string(b) + ".bin", data, size);
      write(dir + "/test_batch.bin", data, size);
      efsign::load_cifar10(dir);
    } else {
      write(dir + "/train.bin", data, size);
      write(dir + "/test.bin", data, size);
      efsign::load_cifar100(dir);
    }
  } catch (const efsign::InputError&) {
  } catch (const efsign::UsageError&) {
  }
  return 0;
}
