// efsign-report: side-by-side table of the "summary" records of several
// efsign-train --metrics-out files (JSON Lines).
//   efsign-report runs/ef.jsonl runs/sgdm.jsonl
#include <fmt/format.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

// Parses one flat JSON object of strings and numbers; returns false on anything else.
bool parse_flat(const std::string& s, std::map<std::string, std::string>& out) {
  std::size_t i = 0;
  auto ws = [&] {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  };
  auto str = [&](std::string& v) {
    if (i >= s.size() || s[i] != '"') return false;
    ++i;
    v.clear();
    while (i < s.size() && s[i] != '"') {
      if (s[i] == '\\' && i + 1 < s.size()) ++i;
      v += s[i++];
    }
    if (i >= s.size()) return false;
    ++i;
    return true;
  };
  ws();
  if (i >= s.size() || s[i++] != '{') return false;
  for (;;) {
    ws();
    if (i < s.size() && s[i] == '}') return true;
    std::string k, v;
    if (!str(k)) return false;
    ws();
    if (i >= s.size() || s[i++] != ':') return false;
    ws();
    if (i < s.size() && s[i] == '"') {
      if (!str(v)) return false;
    } else {
      while (i < s.size() && s[i] != ',' && s[i] != '}') v += s[i++];
      while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
    }
    out[k] = v;
    ws();
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') return true;
    return false;
  }
}

double num(const std::map<std::string, std::string>& m, const std::string& k) {
  auto it = m.find(k);
  if (it == m.end()) return 0.0;
  try {
    return std::stod(it->second);
  } catch (...) {
    return 0.0;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    fmt::print("usage: efsign-report METRICS.jsonl...\n"
               "Prints one row per file from its last \"summary\" record (written by efsign-train --metrics-out).\n");
    return argc < 2 ? 2 : 0;
  }
  std::vector<std::map<std::string, std::string>> rows;
  for (int a = 1; a < argc; ++a) {
    std::ifstream in(argv[a]);
    if (!in) {
      fmt::print(stderr, "efsign-report: error: {}: cannot open\n", argv[a]);
      return 2;
    }
    std::map<std::string, std::string> last;
    std::string line;
    while (std::getline(in, line)) {
      std::map<std::string, std::string> m;
      if (parse_flat(line, m) && m["event"] == "summary") last = m;
    }
    if (last.empty()) {
      fmt::print(stderr, "efsign-report: error: {}: no summary record (did the run finish?)\n", argv[a]);
      return 2;
    }
    rows.push_back(last);
  }
  fmt::print("| {:<11} | {:>5} | {:>9} | {:>15} | {:>10} | {:>12} | {:>10} | {:>16} |\n", "optimizer", "ranks",
             "test acc", "bytes/step/rank", "vs fp32", "step time", "images/s", "checksum");
  fmt::print("|{:-<13}|{:->7}|{:->11}|{:->17}|{:->12}|{:->14}|{:->12}|{:->18}|\n", "", "", "", "", "", "", "", "");
  for (auto& r : rows) {
    const double bytes = num(r, "bytes_sent_per_step");
    fmt::print("| {:<11} | {:>5} | {:>8.2f}% | {:>15.0f} | {:>9.1f}x | {:>9.2f} ms | {:>10.0f} | {:>16} |\n",
               r["optimizer"], r["world_size"], 100 * num(r, "test_acc"), bytes,
               bytes > 0 ? num(r, "fp32_bytes_per_step") / bytes : 0.0, num(r, "step_time_ms"),
               num(r, "images_per_sec"), r["param_checksum"]);
  }
  return 0;
}
