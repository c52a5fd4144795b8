#include "efsign/metrics.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>

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

bool parse_flat_json(const std::string& s, std::map<std::string, JsonValue>& out) {
  std::size_t i = 0;
  auto ws = [&] {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  };
  auto str = [&](std::string& v) {
    if (i >= s.size() || s[i] != '"') return false;
    ++i;
    v.clear();
    while (i < s.size() && s[i] != '"') {
      if (s[i] == '\\' && i + 1 < s.size()) {
        ++i;
        switch (s[i]) {
          case 'n': v += '\n'; break;
          case 't': v += '\t'; break;
          case 'u':  // \u00XX, as json_escape writes control characters
            if (i + 4 >= s.size()) return false;
            v += static_cast<char>(std::stoi(s.substr(i + 1, 4), nullptr, 16));
            i += 4;
            break;
          default: v += s[i];
        }
        ++i;
        continue;
      }
      v += s[i++];
    }
    if (i >= s.size()) return false;
    ++i;
    return true;
  };
  ws();
  if (i >= s.size() || s[i++] != '{') return false;
  ws();
  if (i < s.size() && s[i] == '}') return true;
  for (;;) {
    ws();
    std::string k;
    JsonValue v;
    if (!str(k)) return false;
    ws();
    if (i >= s.size() || s[i++] != ':') return false;
    ws();
    if (i < s.size() && s[i] == '"') {
      if (!str(v.text)) return false;
      v.is_string = true;
    } else {
      while (i < s.size() && s[i] != ',' && s[i] != '}' && !std::isspace(static_cast<unsigned char>(s[i])))
        v.text += s[i++];
      if (v.text.empty() || v.text[0] == '{' || v.text[0] == '[') return false;
    }
    out[k] = v;
    ws();
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') {
      ++i;
      ws();
      return i == s.size();
    }
    return false;
  }
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

MetricsWriter::MetricsWriter(const std::string& path, bool append)
    : file_(std::fopen(path.c_str(), append ? "a" : "w")), path_(path) {
  if (!file_) throw InputError(fmt::format("{}: cannot open for writing ({})", path, std::strerror(errno)));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

MetricsWriter::MetricsWriter(MetricsWriter&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)), path_(std::move(other.path_)) {}

MetricsWriter& MetricsWriter::operator=(MetricsWriter&& other) noexcept {
  if (this != &other) {
    if (file_) std::fclose(file_);
    file_ = std::exchange(other.file_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

void MetricsWriter::write(const JsonLine& line) {
  if (!enabled()) return;
  const std::string text = line.str() + "\n";
  errno = 0;
  if (std::fwrite(text.data(), 1, text.size(), file_) != text.size() || std::fflush(file_) != 0) {
    const int err = errno;
    std::clearerr(file_);
    throw InputError(fmt::format("{}: cannot write metrics ({})", path_, std::strerror(err ? err : EIO)));
  }
}

}  // namespace efsign
