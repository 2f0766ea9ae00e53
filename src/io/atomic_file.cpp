#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "core/error.h"

namespace exq::io {

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  temp_ = path_;
  temp_ += ".tmp-" + std::to_string(::getpid());
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    const int err = errno;
    throw Error(fmt::format("cannot create {}: {}", temp_.string(), std::strerror(err)),
                ErrorContext{.file = path_.string()});
  }
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_(std::move(other.temp_)),
      fd_(std::exchange(other.fd_, -1)),
      offset_(std::exchange(other.offset_, 0)) {}

AtomicFile::~AtomicFile() { discard(); }

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_.c_str());
  }
}

void AtomicFile::fail(const char* what, int err) {
  discard();
  throw Error(fmt::format("cannot {}: {}", what, std::strerror(err)),
              ErrorContext{.file = path_.string()});
}

void AtomicFile::write(const void* data, size_t n) {
  EXQ_ASSERT(fd_ >= 0);
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; loop on short writes.
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    if (w == 0) fail("write", ENOSPC);
    p += w;
    n -= static_cast<size_t>(w);
    offset_ += static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  EXQ_ASSERT(fd_ >= 0);
  if (::fsync(fd_) != 0) fail("fsync", errno);
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    throw Error(fmt::format("cannot close: {}", std::strerror(err)),
                ErrorContext{.file = path_.string()});
  }
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    throw Error(fmt::format("cannot rename {} to it: {}", temp_.string(), std::strerror(err)),
                ErrorContext{.file = path_.string()});
  }
  // Persist the rename itself; failure here is harmless for correctness, so it is ignored.
  std::filesystem::path dir = path_.parent_path();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::filesystem::path& path, std::string_view what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(fmt::format("cannot read {}", what), ErrorContext{.file = path.string()});
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(fmt::format("cannot read {}", what), ErrorContext{.file = path.string()});
  return ss.str();
}

void write_file_atomic(const std::filesystem::path& path, std::string_view data) {
  AtomicFile f(path);
  f.write(data);
  f.commit();
}

void write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> data) {
  AtomicFile f(path);
  f.write(data.data(), data.size());
  f.commit();
}

}  // namespace exq::io
