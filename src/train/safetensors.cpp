#include "efsign/safetensors.h"

#include <ATen/ATen.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <set>

#include <fmt/format.h>

#include "efsign/error.h"
#include "efsign/metrics.h"
#include "../util/durable_file.h"

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
  const uint64_t n = json.size();
  std::vector<Span<const std::byte>> parts;
  parts.emplace_back(reinterpret_cast<const std::byte*>(&n), 8);
  parts.emplace_back(reinterpret_cast<const std::byte*>(json.data()), json.size());
  for (std::size_t i : order)
    parts.emplace_back(static_cast<const std::byte*>(host[i].data_ptr()),
                       static_cast<std::size_t>(host[i].numel() * host[i].element_size()));
  detail::write_file_durably(path, parts, "model");
}

}  // namespace efsign
