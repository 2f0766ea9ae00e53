// Crash-safe file writing: data goes to `<path>.tmp-<pid>`, is fsynced, then renamed over
// `path`, so readers see either the old file or the complete new one, never a torn write.
// On any failure the temporary is removed and exq::Error names the destination path. Also the
// whole-file read the loaders share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace exq::io {

// One pending atomic write. Not thread-safe; move-only. Destroying it without commit()
// discards the temporary (so an exception mid-write leaves nothing behind).
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&&) = delete;
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // fsync, close, rename onto path(), fsync the folder. Throws on failure.
  void commit();
  // Bytes written so far.
  size_t offset() const { return offset_; }

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  [[noreturn]] void fail(const char* what, int err);
  void discard() noexcept;

  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  size_t offset_ = 0;
};

// Reads a whole file. Throws exq::Error "cannot read <what>" naming the file when it cannot be
// opened or read.
std::string read_file(const std::filesystem::path& path, std::string_view what = "file");

void write_file_atomic(const std::filesystem::path& path, std::string_view data);
void write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> data);

}  // namespace exq::io
