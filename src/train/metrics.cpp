#include "efsign/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "efsign/error.h"

namespace efsign {

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<int>(c));
        else
          out += c;
    }
  }
  return out;
}

void JsonLine::key(const std::string& k) {
  if (!body_.empty()) body_ += ",";
  body_ += "\"" + json_escape(k) + "\":";
}
JsonLine& JsonLine::add(const std::string& k, const std::string& v) {
  key(k);
  body_ += "\"" + json_escape(v) + "\"";
  return *this;
}
JsonLine& JsonLine::add(const std::string& k, double v) {
  key(k);
  body_ += std::isfinite(v) ? fmt::format("{}", v) : "null";
  return *this;
}
JsonLine& JsonLine::add(const std::string& k, int64_t v) {
  key(k);
  body_ += fmt::format("{}", v);
  return *this;
}
JsonLine& JsonLine::add(const std::string& k, bool v) {
  key(k);
  body_ += v ? "true" : "false";
  return *this;
}

MetricsWriter::MetricsWriter(const std::string& path) : out_(path, std::ios::out | std::ios::trunc) {
  if (!out_) throw InputError(fmt::format("{}: cannot open for writing ({})", path, std::strerror(errno)));
}

void MetricsWriter::write(const JsonLine& line) {
  if (!enabled()) return;
  out_ << line.str() << '\n';
  out_.flush();
}

}  // namespace efsign
