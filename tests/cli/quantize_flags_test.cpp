// `exq quantize` device / memory / snapshot flags: bad values are one clear error line (exit 2)
// before any model is read, and -h lists them.
#include <gtest/gtest.h>

#include "cli_support.h"

namespace exq::test {
namespace {

RunResult quantize(std::vector<std::string> extra) {
  std::vector<std::string> args = {"quantize", "-i", "/nonexistent/model", "-o",
                                   "/nonexistent/work", "-b", "4"};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_exq(args);
}

TEST(QuantizeFlags, BadValuesAreClearErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"--device", "tpu"}, "--device must be cpu, cuda, cuda:N or auto, got 'tpu'"},
      {{"--device", "cuda:x"}, "expected cuda:N"},
      {{"--snapshot-interval", "-1"}, "--snapshot-interval expects seconds >= 0"},
      {{"--snapshot-interval", "soon"}, "--snapshot-interval expects a number"},
      {{"--host-budget", "-2"}, "--host-budget expects a size in GB >= 0"},
      {{"--vram-budget"}, "--vram-budget needs a value"},
  };
  for (const Case& c : cases) {
    const RunResult r = quantize(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args[0];
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
  }
}

TEST(QuantizeFlags, CudaDeviceWithoutCudaQuantizerIsAClearError) {
#if defined(EXQ_HAVE_CUDA)
  GTEST_SKIP() << "CUDA build: --device cuda is available or fails on the device check";
#else
  const RunResult r = quantize({"--device", "cuda"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("built without the CUDA quantizer"), std::string::npos) << r.err;
  // auto falls back to the CPU: the error is about the missing model, not the device.
  const RunResult a = quantize({"--device", "auto", "--host-budget", "0.5", "--snapshot-interval", "0"});
  EXPECT_EQ(a.exit_code, 2);
  EXPECT_NE(a.err.find("/nonexistent/model"), std::string::npos) << a.err;
#endif
}

TEST(QuantizeFlags, HelpListsThem) {
  const RunResult r = run_exq({"quantize", "-h"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--device D", "--vram-budget GB", "--host-budget GB", "--snapshot-interval S"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
}

}  // namespace
}  // namespace exq::test
