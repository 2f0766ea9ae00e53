// Device discovery: how many CUDA devices there are, what they are, and require_device(),
// the one gate every CUDA entry point goes through (clear error without a usable GPU).
#pragma once

#include <cstddef>
#include <string>

namespace exq::cuda {

// exq's kernels use bf16 / cp.async and are only built for Ampere and newer.
inline constexpr int kMinComputeMajor = 8;

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0;
  int cc_minor = 0;
  size_t total_memory = 0;  // bytes
  size_t free_memory = 0;   // bytes, at the time of the query
  int sm_count = 0;
  size_t l2_bytes = 0;
  size_t shared_per_block_optin = 0;  // bytes a block may use after cudaFuncSetAttribute
  int memory_bus_bits = 0;
};

// Number of visible devices; 0 (not an error) when there is no driver or no GPU.
int device_count();
// Properties of one device; throws exq::Error for an invalid index.
DeviceInfo device_info(int device);
// Throws exq::Error unless `device` exists and has compute capability >= 8.0; makes it current.
DeviceInfo require_device(int device = 0);
// Human-readable list of devices (or why there are none), for `exq info --devices`. Never throws.
std::string describe_devices();

// The current device's multiprocessors, and the shared memory one block may opt in to (bytes):
// one attribute query each, cheap enough for launch-time decisions (device_info is not).
int current_multiprocessors();
int current_shared_per_block_optin();

}  // namespace exq::cuda
