#include "efsign/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <set>

#include <fmt/format.h>

#include "efsign/error.h"
#include "efsign/metrics.h"

namespace efsign {
namespace {

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "F64";
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: throw Error(fmt::format("safetensors: unsupported dtype {}", c10::toString(t)));
  }
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors is little-endian");
  std::set<std::string> names;
  std::vector<at::Tensor> host;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw Error("safetensors: a tensor cannot be called __metadata__");
    if (!names.insert(name).second) throw Error(fmt::format("safetensors: tensor name '{}' given twice", name));
    host.push_back(t.detach().to(at::kCPU).contiguous());
    (void)dtype_name(host.back().scalar_type());  // an unsupported dtype fails before any file exists
  }
  // Note [safetensors data order]: the header lists the tensors in the given order (efsign's
  // checksum order); their bytes are laid out by decreasing element size, in the given order
  // within a size, so that every tensor starts at a multiple of its element size (the header
  // is padded to 8), as the reference serializer guarantees for zero-copy readers.
  std::vector<std::size_t> order(host.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return host[a].element_size() > host[b].element_size(); });
  std::vector<uint64_t> begin(host.size());
  uint64_t offset = 0;
  for (std::size_t i : order) {
    begin[i] = offset;
    offset += static_cast<uint64_t>(host[i].numel() * host[i].element_size());
  }
  std::string json = "{\"__metadata__\":{";
  bool first = true;
  for (const auto& [k, v] : metadata) {
    json += fmt::format("{}\"{}\":\"{}\"", first ? "" : ",", json_escape(k), json_escape(v));
    first = false;
  }
  json += "}";
  for (std::size_t i = 0; i < host.size(); ++i) {
    const at::Tensor& c = host[i];
    json += fmt::format(",\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                        json_escape(tensors[i].first), dtype_name(c.scalar_type()), fmt::join(c.sizes(), ","),
                        begin[i], begin[i] + static_cast<uint64_t>(c.numel() * c.element_size()));
  }
  json += "}";
  while (json.size() % 8 != 0) json += ' ';
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw InputError(fmt::format("{}: cannot write ({})", tmp, std::strerror(errno)));
  const uint64_t n = json.size();
  bool ok = std::fwrite(&n, 8, 1, f) == 1 && std::fwrite(json.data(), 1, json.size(), f) == json.size();
  for (std::size_t i : order) {
    const at::Tensor& c = host[i];
    const std::size_t bytes = static_cast<std::size_t>(c.numel() * c.element_size());
    ok = ok && (bytes == 0 || std::fwrite(c.data_ptr(), 1, bytes, f) == bytes);
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  int err = errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;  // the close's own reason (a deferred write error), not a stale one
  }
  if (!ok) {
    std::remove(tmp.c_str());
    throw InputError(fmt::format("{}: cannot write ({})", tmp, std::strerror(err ? err : EIO)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw InputError(fmt::format("{}: cannot rename into place ({})", path, std::strerror(e)));
  }
}

}  // namespace efsign
