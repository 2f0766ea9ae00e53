// libFuzzer target: SafetensorsFile::parse on arbitrary bytes must either succeed with views
// that stay inside the buffer or throw exq::Error.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = exq::io::SafetensorsFile::parse(exq::io::MappedFile::from_bytes(
        std::vector<uint8_t>(data, data + size), "fuzz.safetensors"));
    volatile uint8_t sink = 0;
    for (const auto& name : f.names()) {
      const exq::TensorView v = f.get(name);
      const auto* p = static_cast<const uint8_t*>(v.raw());
      for (size_t i = 0; i < v.nbytes(); ++i) sink = sink ^ p[i];
    }
    for (const auto& [k, val] : f.metadata())
      sink = sink ^ static_cast<uint8_t>(k.size() + val.size());
  } catch (const exq::Error&) {
  }
  return 0;
}
