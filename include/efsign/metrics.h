// efsign/metrics.h — one flat JSON object per line (JSON Lines), for plotting.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
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

// One value of a flat JSON object: its text (a string unescaped, else the literal as
// written: a number, true, false or null) and whether it was a string.
struct JsonValue {
  std::string text;
  bool is_string = false;
};
// Parses one flat JSON object (no nesting) of strings, numbers, booleans and nulls, as
// JsonLine writes them; false on anything else.
bool parse_flat_json(const std::string& line, std::map<std::string, JsonValue>& out);

// Writes lines to a file, flushing each (a crashed run keeps what it wrote). `append`
// keeps what the file holds (a resumed run continues its own metrics); otherwise the
// file starts empty. A write that fails (a full disk, /dev/full) is an InputError that
// names the file and the OS's reason, at the write that failed.
class MetricsWriter {
 public:
  MetricsWriter() = default;
  MetricsWriter(const std::string& path, bool append);  // InputError if it cannot open
  ~MetricsWriter();
  MetricsWriter(MetricsWriter&& other) noexcept;
  MetricsWriter& operator=(MetricsWriter&& other) noexcept;
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  bool enabled() const { return file_ != nullptr; }
  const std::string& path() const { return path_; }
  void write(const JsonLine& line);

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

}  // namespace efsign
