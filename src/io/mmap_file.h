// Read-only view of a whole file: mmapped from disk, or an owned in-memory buffer (tests and
// fuzzers parse bytes without touching disk). Move-only; views into it stay valid while it lives,
// and across moves (the mapping itself never moves).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace exq::io {

class MappedFile {
 public:
  // Throws exq::Error naming the file when it cannot be opened, stat'ed or mapped.
  static MappedFile open(const std::filesystem::path& path);
  // Wraps bytes already in memory; `label` names them in errors.
  static MappedFile from_bytes(std::vector<uint8_t> bytes, std::filesystem::path label);

  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release() noexcept;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;         // data_ came from mmap (else from owned_)
  std::vector<uint8_t> owned_;  // from_bytes storage
  std::filesystem::path path_;
};

}  // namespace exq::io
