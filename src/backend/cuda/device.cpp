#include "backend/cuda/device.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace exq::cuda {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// cudaGetDeviceCount's status explains a count of zero (no driver, no device, ...).
cudaError_t query_count(int* count) {
  *count = 0;
  const cudaError_t status = cudaGetDeviceCount(count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls are not poisoned by it
    *count = 0;
  }
  return status;
}

std::string version_str(int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); }

}  // namespace

int device_count() {
  int count = 0;
  query_count(&count);
  return count;
}

DeviceInfo device_info(int device) {
  const int count = device_count();
  EXQ_CHECK(device >= 0 && device < count, "CUDA device {} does not exist ({} device(s) found)",
            device, count);
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.index = device;
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_memory = prop.totalGlobalMem;
  info.sm_count = prop.multiProcessorCount;
  info.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  info.shared_per_block_optin = prop.sharedMemPerBlockOptin;
  info.memory_bus_bits = prop.memoryBusWidth;
  int previous = 0;
  CUDA_CHECK(cudaGetDevice(&previous));
  CUDA_CHECK(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t status = cudaMemGetInfo(&free_bytes, &total_bytes);
  CUDA_CHECK(cudaSetDevice(previous));
  CUDA_CHECK(status);
  info.free_memory = free_bytes;
  return info;
}

DeviceInfo require_device(int device) {
  int count = 0;
  const cudaError_t status = query_count(&count);
  if (count == 0)
    throw Error(fmt::format("no CUDA device available ({}: {}); use the CPU backend",
                            cudaGetErrorName(status), cudaGetErrorString(status)));
  EXQ_CHECK(device >= 0 && device < count, "CUDA device {} does not exist ({} device(s) found)",
            device, count);
  DeviceInfo info = device_info(device);
  EXQ_CHECK(info.cc_major >= kMinComputeMajor,
            "CUDA device {} ({}) has compute capability {}.{}; exq needs {}.0 or newer",
            device, info.name, info.cc_major, info.cc_minor, kMinComputeMajor);
  CUDA_CHECK(cudaSetDevice(device));
  return info;
}

std::string describe_devices() {
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::string out = fmt::format("CUDA runtime {}, driver {}\n", version_str(runtime),
                                driver ? version_str(driver) : std::string("none"));
  int count = 0;
  const cudaError_t status = query_count(&count);
  if (count == 0)
    return out + fmt::format("no CUDA device ({}: {})\n", cudaGetErrorName(status),
                             cudaGetErrorString(status));
  for (int d = 0; d < count; ++d) {
    try {
      const DeviceInfo i = device_info(d);
      out += fmt::format(
          "cuda:{} {}: compute {}.{}{}, {:.1f} GiB ({:.1f} GiB free), {} SMs, L2 {:.0f} MiB, "
          "{} KiB shared/block\n",
          d, i.name, i.cc_major, i.cc_minor,
          i.cc_major < kMinComputeMajor ? " (unsupported, needs 8.0+)" : "",
          static_cast<double>(i.total_memory) / kGiB, static_cast<double>(i.free_memory) / kGiB,
          i.sm_count, static_cast<double>(i.l2_bytes) / (1024.0 * 1024.0),
          i.shared_per_block_optin / 1024);
    } catch (const std::exception& e) {
      out += fmt::format("cuda:{}: query failed: {}\n", d, e.what());
    }
  }
  return out;
}

namespace {
int current_attribute(cudaDeviceAttr attr) {
  int device = 0, v = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, device));
  return v;
}
}  // namespace

int current_multiprocessors() { return current_attribute(cudaDevAttrMultiProcessorCount); }

int current_shared_per_block_optin() {
  return current_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
}

}  // namespace exq::cuda
