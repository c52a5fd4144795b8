// efsign/metrics.h — one flat JSON object per line (JSON Lines), for plotting.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace efsign {

class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& value);
  JsonLine& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  JsonLine& add(const std::string& key, double value);  // NaN/Inf become null
  JsonLine& add(const std::string& key, int64_t value);
  JsonLine& add(const std::string& key, int value) { return add(key, static_cast<int64_t>(value)); }
  JsonLine& add(const std::string& key, bool value);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void key(const std::string& k);
  std::string body_;
};

std::string json_escape(const std::string& s);

// Appends lines to a file, flushing each (a crashed run keeps what it wrote).
class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::string& path);  // throws InputError if it cannot open
  bool enabled() const { return out_.is_open(); }
  void write(const JsonLine& line);

 private:
  std::ofstream out_;
};

}  // namespace efsign
