#include "efsign/checksum.h"

#include <fmt/format.h>

namespace efsign {

namespace {
constexpr uint64_t kFnvPrime = 1099511628211ull;
}

uint64_t fnv1a(Span<const std::byte> bytes, uint64_t seed) {
  uint64_t h = seed;
  for (std::byte b : bytes) {
    h ^= static_cast<uint64_t>(b);
    h *= kFnvPrime;
  }
  return h;
}

uint64_t fnv1a_string(const std::string& s, uint64_t seed) {
  return fnv1a(Span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()), s.size()), seed);
}

uint64_t fnv1a_u64(uint64_t value, uint64_t seed) {
  std::byte b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
  return fnv1a(Span<const std::byte>(b, 8), seed);
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

}  // namespace efsign
