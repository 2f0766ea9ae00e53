#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/mmap_file.h"
#include "test_support.h"

namespace exq::io {
namespace fs = std::filesystem;

namespace {
bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) return true;
  return false;
}
}  // namespace

TEST(MappedFile, ReadsWholeFile) {
  const fs::path dir = test::temp_dir("mmap_read");
  const std::string text = "hello mmap\n";
  write_file_atomic(dir / "a.txt", text);
  MappedFile f = MappedFile::open(dir / "a.txt");
  ASSERT_EQ(f.size(), text.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.data()), f.size()), text);
  MappedFile g = std::move(f);
  EXPECT_EQ(g.size(), text.size());
  EXPECT_EQ(f.size(), 0u);
  EXPECT_EQ(g.path(), dir / "a.txt");
}

TEST(MappedFile, EmptyFile) {
  const fs::path dir = test::temp_dir("mmap_empty");
  write_file_atomic(dir / "e", std::string_view());
  MappedFile f = MappedFile::open(dir / "e");
  EXPECT_EQ(f.size(), 0u);
}

TEST(MappedFile, MissingFileNamesIt) {
  const fs::path p = test::temp_dir("mmap_missing") / "nope.bin";
  try {
    MappedFile::open(p);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.context().file, p.string());
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
}

TEST(MappedFile, DirectoryIsRejected) {
  const fs::path dir = test::temp_dir("mmap_dir");
  EXPECT_THROW(MappedFile::open(dir), Error);
}

TEST(AtomicFile, WritesAndReplaces) {
  const fs::path dir = test::temp_dir("atomic_write");
  write_file_atomic(dir / "f.txt", std::string_view("first"));
  write_file_atomic(dir / "f.txt", std::string_view("second"));
  EXPECT_EQ(test::read_file(dir / "f.txt"), "second");
  const std::vector<uint8_t> bytes = {0, 1, 2, 255};
  write_file_atomic(dir / "b.bin", std::span<const uint8_t>(bytes));
  EXPECT_EQ(test::read_file(dir / "b.bin"), std::string("\0\1\2\xff", 4));
  EXPECT_FALSE(has_temp_files(dir));
}

TEST(AtomicFile, AbandonedWriteLeavesOldFile) {
  const fs::path dir = test::temp_dir("atomic_abandon");
  write_file_atomic(dir / "f.txt", std::string_view("old"));
  {
    AtomicFile f(dir / "f.txt");
    f.write("partial new contents");
    EXPECT_TRUE(fs::exists(f.temp_path()));
  }
  EXPECT_EQ(test::read_file(dir / "f.txt"), "old");
  EXPECT_FALSE(has_temp_files(dir));
}

TEST(AtomicFile, UnwritableFolderNamesPath) {
  const fs::path p = test::temp_dir("atomic_nodir") / "missing_sub" / "out.json";
  try {
    write_file_atomic(p, std::string_view("x"));
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.context().file, p.string());
    EXPECT_NE(std::string(e.what()).find("cannot create"), std::string::npos) << e.what();
  }
}

// A file-size limit makes write() fail like a full disk does; the error must name the
// destination and no temporary may be left behind.
TEST(AtomicFile, WriteFailureRemovesTemp) {
  const fs::path dir = test::temp_dir("atomic_full");
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 64 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string what;
  std::string file;
  try {
    write_file_atomic(dir / "big.bin", std::string(1 << 20, 'x'));
  } catch (const Error& e) {
    what = e.what();
    file = e.context().file;
  }
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(file, (dir / "big.bin").string());
  EXPECT_NE(what.find("cannot write"), std::string::npos) << what;
  EXPECT_FALSE(fs::exists(dir / "big.bin"));
  EXPECT_FALSE(has_temp_files(dir));
}

}  // namespace exq::io
