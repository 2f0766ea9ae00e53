// write_safetensors: deterministic layout, atomic files, optional HF-style sharding.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace exq::io {
namespace fs = std::filesystem;

namespace {

void write_one(const fs::path& path, const std::vector<const NamedTensor*>& tensors,
               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const NamedTensor* t : tensors) {
    const size_t n = t->tensor.nbytes();
    header[t->name] = {{"dtype", std::string(dtype_name(t->tensor.dtype()))},
                       {"shape", t->tensor.shape()},
                       {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  // Pad with spaces (valid JSON whitespace) so the data region starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));

  AtomicFile out(path);
  out.write(len, 8);
  out.write(text);
  for (const NamedTensor* t : tensors) {
    const TensorView& v = t->tensor;
    if (v.numel() == 0) continue;
    if (v.is_contiguous()) {
      out.write(v.raw(), v.nbytes());
    } else {
      const Tensor c = Tensor::copy_of(v);
      out.write(c.raw(), c.nbytes());
    }
  }
  out.commit();
}

}  // namespace

std::vector<fs::path> write_safetensors(const fs::path& path,
                                        const std::vector<NamedTensor>& tensors,
                                        const std::map<std::string, std::string>& metadata,
                                        size_t shard_bytes) {
  std::unordered_set<std::string> seen;
  std::vector<const NamedTensor*> order;
  for (const NamedTensor& t : tensors) {
    const ErrorContext ctx{.file = path.string(), .tensor = t.name};
    if (t.name.empty() || t.name == "__metadata__") throw Error("invalid tensor name", ctx);
    if (!seen.insert(t.name).second) throw Error("tensor name given twice", ctx);
    if (t.tensor.empty() && t.tensor.numel() != 0) throw Error("tensor has no data", ctx);
    order.push_back(&t);
  }
  // Larger elements first keeps every tensor aligned to its element size without gaps.
  std::sort(order.begin(), order.end(), [](const NamedTensor* a, const NamedTensor* b) {
    const size_t sa = dtype_size(a->tensor.dtype()), sb = dtype_size(b->tensor.dtype());
    return sa != sb ? sa > sb : a->name < b->name;
  });

  if (shard_bytes == 0) {
    write_one(path, order, metadata);
    return {path};
  }

  std::vector<std::vector<const NamedTensor*>> shards(1);
  size_t current = 0, total = 0;
  for (const NamedTensor* t : order) {
    const size_t n = t->tensor.nbytes();
    if (!shards.back().empty() && current + n > shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(t);
    current += n;
    total += n;
  }
  const fs::path dir = path.parent_path();
  std::string stem = path.filename().string();
  if (stem.size() > 12 && stem.ends_with(".safetensors")) stem.resize(stem.size() - 12);

  std::vector<fs::path> written;
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name =
        fmt::format("{}-{:05d}-of-{:05d}.safetensors", stem, i + 1, shards.size());
    write_one(dir / name, shards[i], metadata);
    written.push_back(dir / name);
    for (const NamedTensor* t : shards[i]) weight_map[t->name] = name;
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const fs::path index_path = dir / (stem + ".safetensors.index.json");
  write_file_atomic(index_path, index.dump(2) + "\n");
  written.push_back(index_path);
  return written;
}

void remove_stale_safetensors(const fs::path& path, const std::vector<fs::path>& written) {
  const std::string stem = path.stem().string();
  std::unordered_set<std::string> keep;
  for (const fs::path& p : written) keep.insert(p.filename().string());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(path.parent_path().empty() ? fs::path(".") : path.parent_path(), ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = name == stem + ".safetensors" || name == stem + ".safetensors.index.json" ||
                      (name.starts_with(stem + "-") && name.ends_with(".safetensors"));
    if (ours && !keep.count(name)) fs::remove(e.path(), ec);
  }
}

std::vector<fs::path> copy_model_side_files(const fs::path& from, const fs::path& to,
                                            const std::vector<std::string>& skip) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(from)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name.ends_with(".safetensors") || name == "model.safetensors.index.json" || name.ends_with(".bin") ||
        name.ends_with(".pt") || name.ends_with(".gguf") || std::find(skip.begin(), skip.end(), name) != skip.end())
      continue;
    write_file_atomic(to / name, read_file(e.path()));
    files.push_back(to / name);
  }
  return files;
}

}  // namespace exq::io
