#include "durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "efsign/error.h"

namespace efsign::detail {
namespace {
std::string os_error(int err) { return std::strerror(err); }
}  // namespace

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) throw InputError(fmt::format("{}: cannot open the folder to flush it ({})", dir, os_error(errno)));
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0) throw InputError(fmt::format("{}: cannot flush the folder ({})", dir, os_error(err)));
}

std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

void write_file_durably(const std::string& path, const std::vector<Span<const std::byte>>& parts, const char* what) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw InputError(fmt::format("{}: cannot write {} ({})", tmp, what, os_error(errno)));
  auto fail = [&](const char* doing, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return InputError(fmt::format("{}: cannot {} {} ({})", path, doing, what, os_error(err)));
  };
  for (const Span<const std::byte>& part : parts) {
    std::size_t done = 0;
    while (done < part.size()) {
      const ssize_t w = ::write(fd, part.data() + done, part.size() - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw fail("write", errno);
      }
      done += static_cast<std::size_t>(w);
    }
  }
  if (::fsync(fd) != 0) throw fail("flush", errno);
  if (::close(fd) != 0) {  // a deferred write error
    const int err = errno;
    ::unlink(tmp.c_str());
    throw InputError(fmt::format("{}: cannot close {} ({})", path, what, os_error(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw InputError(fmt::format("{}: cannot rename {} into place ({})", path, what, os_error(err)));
  }
  fsync_dir(parent_of(path));
}

void make_dirs(const std::string& dir, const char* what) {
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      const std::string cur = dir.substr(0, i);
      if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
        throw InputError(fmt::format("{}: cannot create the {} folder ({})", cur, what, os_error(errno)));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    throw InputError(fmt::format("{}: cannot use as {} folder ({})", dir, what, os_error(errno)));
  if (!S_ISDIR(st.st_mode)) throw InputError(fmt::format("{}: cannot use as {} folder (not a folder)", dir, what));
}

void probe_writable(const std::string& dir, const char* what) {
  const std::string probe = fmt::format("{}/.efsign-probe-{}", dir, ::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int err = errno;
  if (fd < 0) throw InputError(fmt::format("{}: cannot write a {} file in this folder ({})", dir, what, os_error(err)));
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace efsign::detail
