// efsign-report: side-by-side table of the "summary" records of several
// efsign-train --metrics-out files (JSON Lines).
//   efsign-report runs/ef.jsonl runs/sgdm.jsonl
// Every line must be a flat JSON object; the last "summary" record of each file must
// hold every field the table prints, with its type and range. Anything else is one
// line naming the file, the line and the field, and exit code 2.
#include <sys/stat.h>

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// A bad file, line or field: the message names where.
class ReportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Value {
  enum Kind { kString, kNumber, kBool, kNull } kind = kNull;
  std::string text;  // strings: the decoded text; other kinds: the literal as written
  double number = 0;
};
using Record = std::map<std::string, Value>;

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::kString: return "string";
    case Value::kNumber: return "number";
    case Value::kBool: return "boolean";
    case Value::kNull: return "null";
  }
  return "?";
}

// Parses one flat JSON object (values: strings, numbers, true, false, null). Throws
// std::runtime_error saying what is wrong at which column.
class FlatParser {
 public:
  explicit FlatParser(const std::string& s) : s_(s) {}

  Record parse() {
    Record out;
    ws();
    expect('{', "a JSON object starting with '{'");
    ws();
    if (peek() == '}') {
      ++i_;
      return end(out);
    }
    for (;;) {
      ws();
      if (peek() != '"') fail("a field name in double quotes");
      const std::string key = string();
      ws();
      expect(':', "':' after the field name");
      ws();
      out[key] = value(key);
      ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}', "',' or '}' after a value");
      return end(out);
    }
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  [[noreturn]] void fail(const std::string& wanted) const {
    const std::string got = i_ < s_.size() ? fmt::format("'{}'", s_[i_]) : std::string("the end of the line");
    throw std::runtime_error(fmt::format("column {}: expected {}, found {}", i_ + 1, wanted, got));
  }
  void expect(char c, const std::string& wanted) {
    if (peek() != c) fail(wanted);
    ++i_;
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) ++i_;
  }
  Record end(Record& out) {
    ws();
    if (i_ != s_.size()) fail("nothing after the object");
    return std::move(out);
  }
  unsigned hex4() {
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = peek();
      if (!std::isxdigit(static_cast<unsigned char>(c))) fail("4 hex digits after \\u");
      v = v * 16 + static_cast<unsigned>(std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                                                                                      : std::tolower(c) - 'a' + 10);
      ++i_;
    }
    return v;
  }
  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  std::string string() {
    expect('"', "'\"'");
    std::string v;
    for (;;) {
      if (i_ >= s_.size()) fail("the closing '\"' of a string");
      const char c = s_[i_++];
      if (c == '"') return v;
      if (static_cast<unsigned char>(c) < 0x20) {
        --i_;
        fail("no control character inside a string");
      }
      if (c != '\\') {
        v += c;
        continue;
      }
      const char e = peek();
      ++i_;
      switch (e) {
        case '"': v += '"'; break;
        case '\\': v += '\\'; break;
        case '/': v += '/'; break;
        case 'b': v += '\b'; break;
        case 'f': v += '\f'; break;
        case 'n': v += '\n'; break;
        case 'r': v += '\r'; break;
        case 't': v += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && peek() == '\\' && i_ + 1 < s_.size() && s_[i_ + 1] == 'u') {
            i_ += 2;
            const unsigned lo = hex4();
            if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(v, cp);
          break;
        }
        default:
          --i_;
          fail("an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
      }
    }
  }
  Value value(const std::string& key) {
    Value v;
    const char c = peek();
    if (c == '"') {
      v.kind = Value::kString;
      v.text = string();
      return v;
    }
    if (c == '{' || c == '[')
      throw std::runtime_error(
          fmt::format("column {}: field \"{}\" holds a nested {}; metrics records are flat", i_ + 1, key,
                      c == '{' ? "object" : "array"));
    for (const char* lit : {"true", "false", "null"}) {
      if (s_.compare(i_, std::strlen(lit), lit) == 0) {
        i_ += std::strlen(lit);
        v.kind = lit[0] == 'n' ? Value::kNull : Value::kBool;
        v.text = lit;
        return v;
      }
    }
    // JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
    const std::size_t start = i_;
    auto digits = [&] {
      const std::size_t d0 = i_;
      while (std::isdigit(static_cast<unsigned char>(peek()))) ++i_;
      return i_ > d0;
    };
    if (peek() == '-') ++i_;
    if (peek() == '0') ++i_;
    else if (!digits()) {
      i_ = start;
      fail(fmt::format("a value for field \"{}\" (a string, number, true, false or null)", key));
    }
    if (peek() == '.') {
      ++i_;
      if (!digits()) fail("digits after the decimal point");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!digits()) fail("digits in the exponent");
    }
    v.kind = Value::kNumber;
    v.text = s_.substr(start, i_ - start);
    v.number = std::strtod(v.text.c_str(), nullptr);  // out of range: +-inf, refused by the checks
    return v;
  }

  const std::string& s_;
  std::size_t i_ = 0;
};

// The fields the table prints, checked on the record at `where` ("FILE:LINE").
class Checked {
 public:
  Checked(const Record& r, std::string where) : r_(r), where_(std::move(where)) {}

  const Value& field(const std::string& key, Value::Kind kind, const std::string& wanted) const {
    auto it = r_.find(key);
    if (it == r_.end()) fail(key, "missing from the summary record (expected " + wanted + ")");
    if (it->second.kind != kind) fail(key, fmt::format("expected {}, found {}", wanted, shown(it->second)));
    return it->second;
  }
  // A finite number in [lo, hi]; `integer`: a whole number.
  double number(const std::string& key, double lo, double hi, bool integer = false) const {
    const std::string wanted = fmt::format("{} {}", integer ? "a whole number" : "a number",
                                           hi == HUGE_VAL ? fmt::format(">= {:g}", lo)
                                                          : fmt::format("in [{:g}, {:g}]", lo, hi));
    const Value& v = field(key, Value::kNumber, wanted);
    if (!(std::isfinite(v.number) && v.number >= lo && v.number <= hi) || (integer && v.number != std::floor(v.number)))
      fail(key, fmt::format("expected {}, found {}", wanted, shown(v)));
    return v.number;
  }
  std::string text(const std::string& key, bool (*valid)(const std::string&), const std::string& wanted) const {
    const Value& v = field(key, Value::kString, wanted);
    if (!valid(v.text)) fail(key, fmt::format("expected {}, found {}", wanted, shown(v)));
    return v.text;
  }

 private:
  // "null", "the boolean true", "the number 3", "the string \"two\"".
  static std::string shown(const Value& v) {
    if (v.kind == Value::kNull) return "null";
    if (v.kind != Value::kString) return fmt::format("the {} {}", kind_name(v.kind), v.text);
    const std::string t = v.text.size() > 40 ? v.text.substr(0, 40) + "..." : v.text;
    return "the string \"" + t + "\"";
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ReportError(fmt::format("{}: field \"{}\": {}", where_, key, what));
  }
  const Record& r_;
  std::string where_;
};

bool is_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '+' && c != '/') return false;
  return true;
}
bool is_hex64(const std::string& s) {
  if (s.size() != 16) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

struct Row {
  std::string optimizer, checksum;
  int64_t ranks = 0;
  double test_acc = 0, bytes = 0, fp32_bytes = 0, step_ms = 0, images_per_sec = 0;
};

// The last summary record of `path`, validated; ReportError on anything wrong.
Row read_summary(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw ReportError(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) throw ReportError(fmt::format("{}: cannot read ({})", path, std::strerror(EISDIR)));
  std::ifstream in(path);
  if (!in) throw ReportError(fmt::format("{}: cannot open ({})", path, std::strerror(errno)));
  Record last;
  int64_t last_line = 0, n = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Record r;
    try {
      r = FlatParser(line).parse();
    } catch (const std::runtime_error& e) {
      throw ReportError(fmt::format("{}:{}: not a flat JSON object: {}", path, n, e.what()));
    }
    auto ev = r.find("event");
    if (ev != r.end() && ev->second.kind == Value::kString && ev->second.text == "summary") {
      last = std::move(r);
      last_line = n;
    }
  }
  if (in.bad()) throw ReportError(fmt::format("{}:{}: read error ({})", path, n + 1, std::strerror(errno)));
  if (last_line == 0) throw ReportError(fmt::format("{}: no summary record (did the run finish?)", path));
  const Checked c(last, fmt::format("{}:{}", path, last_line));
  Row row;
  row.optimizer = c.text("optimizer", is_name, "an optimizer name");
  row.ranks = static_cast<int64_t>(c.number("world_size", 1, 1e9, true));
  row.test_acc = c.number("test_acc", 0, 1);
  row.bytes = c.number("bytes_sent_per_step", 0, HUGE_VAL);
  row.fp32_bytes = c.number("fp32_bytes_per_step", 0, HUGE_VAL);
  row.step_ms = c.number("step_time_ms", 0, HUGE_VAL);
  row.images_per_sec = c.number("images_per_sec", 0, HUGE_VAL);
  row.checksum = c.text("param_checksum", is_hex64, "16 hex digits");
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    fmt::print("usage: efsign-report METRICS.jsonl...\n"
               "Prints one row per file from its last \"summary\" record (written by efsign-train --metrics-out).\n"
               "Exit code 2 (one line naming the file, line and field) on a file that cannot be read, a line\n"
               "that is not a flat JSON object, or a summary whose printed fields are missing or invalid.\n");
    return argc < 2 ? 2 : 0;
  }
  std::vector<Row> rows;
  try {
    for (int a = 1; a < argc; ++a) rows.push_back(read_summary(argv[a]));
  } catch (const ReportError& e) {
    fmt::print(stderr, "efsign-report: error: {}\n", e.what());
    return 2;
  }
  fmt::print("| {:<11} | {:>5} | {:>9} | {:>15} | {:>10} | {:>12} | {:>10} | {:>16} |\n", "optimizer", "ranks",
             "test acc", "bytes/step/rank", "vs fp32", "step time", "images/s", "checksum");
  fmt::print("|{:-<13}|{:->7}|{:->11}|{:->17}|{:->12}|{:->14}|{:->12}|{:->18}|\n", "", "", "", "", "", "", "", "");
  for (const Row& r : rows) {
    const std::string ratio = r.bytes > 0 ? fmt::format("{:.1f}x", r.fp32_bytes / r.bytes) : std::string("-");
    fmt::print("| {:<11} | {:>5} | {:>8.2f}% | {:>15.0f} | {:>10} | {:>9.2f} ms | {:>10.0f} | {:>16} |\n", r.optimizer,
               r.ranks, 100 * r.test_acc, r.bytes, ratio, r.step_ms, r.images_per_sec, r.checksum);
  }
  return 0;
}
