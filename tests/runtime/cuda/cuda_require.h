// The GPU gate of the CUDA runtime tests (as tests/backend/cuda/cuda_test_util.h): a test that
// needs a device skips without one of compute capability >= 8.0.
#pragma once

#include <gtest/gtest.h>

#include "backend/cuda/device.h"

namespace exq::test {

inline bool have_usable_device() {
  if (cuda::device_count() == 0) return false;
  return cuda::device_info(0).cc_major >= cuda::kMinComputeMajor;
}

}  // namespace exq::test

#define EXQ_REQUIRE_CUDA()                                                            \
  do {                                                                                \
    if (!::exq::test::have_usable_device())                                           \
      GTEST_SKIP() << "no CUDA device with compute capability >= 8.0";                \
  } while (0)
