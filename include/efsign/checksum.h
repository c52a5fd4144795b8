// efsign/checksum.h — 64-bit FNV-1a over bytes, used for layout hashes and for the
// parameter checksum that all replicas must agree on.
#pragma once

#include <cstdint>
#include <string>

#include "efsign/span.h"

namespace efsign {

inline constexpr uint64_t kFnvOffset = 1469598103934665603ull;

uint64_t fnv1a(Span<const std::byte> bytes, uint64_t seed = kFnvOffset);
uint64_t fnv1a_string(const std::string& s, uint64_t seed = kFnvOffset);
uint64_t fnv1a_u64(uint64_t value, uint64_t seed = kFnvOffset);
std::string hex64(uint64_t v);

}  // namespace efsign
