#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_set>

#include "core/error.h"

namespace exq::io {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Headers nest at most object -> tensor object -> array (depth 3); deeper input is rejected
// while parsing, before nlohmann builds it.
constexpr int kMaxHeaderDepth = 3;

Error file_error(const fs::path& path, const std::string& message, const std::string& tensor = {}) {
  return Error(message, ErrorContext{.file = path.string(), .tensor = tensor});
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses the header JSON, rejecting duplicate top-level keys (which JSON parsers would
// silently collapse) and recording the keys in file order.
json parse_header(const fs::path& path, std::string_view text, std::vector<std::string>& order) {
  std::unordered_set<std::string> seen;
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxHeaderDepth)
      throw file_error(path,
                       fmt::format("header JSON nested deeper than {} levels", kMaxHeaderDepth));
    if (event == json::parse_event_t::key && depth == 1) {
      std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second) throw file_error(path, "duplicate entry in header", key);
      order.push_back(std::move(key));
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    throw file_error(path, fmt::format("header is not valid JSON: {}", e.what()));
  }
  if (!header.is_object()) throw file_error(path, "header is not a JSON object");
  return header;
}

uint64_t json_uint(const json& v, const fs::path& path, const std::string& tensor,
                   const char* what) {
  if (!v.is_number_unsigned())
    throw file_error(path, fmt::format("{} entry {} is not a non-negative integer", what, v.dump()),
                     tensor);
  return v.get<uint64_t>();
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  return parse(MappedFile::open(path));
}

SafetensorsFile SafetensorsFile::parse(MappedFile file) {
  const fs::path& path = file.path();
  const size_t size = file.size();
  if (size < 8)
    throw file_error(path,
                     fmt::format("file is {} bytes, shorter than the 8-byte header length", size));
  const uint64_t n = read_u64_le(file.data());
  if (n > kSafetensorsMaxHeader)
    throw file_error(
        path, fmt::format("header length {} exceeds the {} byte limit", n, kSafetensorsMaxHeader));
  if (n > size - 8)
    throw file_error(
        path, fmt::format("header length {} runs past the end of the file ({} bytes)", n, size));
  const size_t data_start = 8 + static_cast<size_t>(n);
  const size_t data_size = size - data_start;

  SafetensorsFile st;
  std::vector<std::string> order;
  const json header = parse_header(
      path, std::string_view(reinterpret_cast<const char*>(file.data()) + 8, n), order);

  struct Range {
    size_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (const std::string& name : order) {
    const json& v = header.at(name);
    if (name == "__metadata__") {
      if (!v.is_object()) throw file_error(path, "__metadata__ is not a JSON object");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string())
          throw file_error(path, fmt::format("__metadata__ value of '{}' is not a string", k));
        st.metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) throw file_error(path, "header entry is not a JSON object", name);
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || sh == v.end() || off == v.end())
      throw file_error(path, "header entry lacks dtype, shape or data_offsets", name);
    if (!dt->is_string()) throw file_error(path, "dtype is not a string", name);
    const std::string dname = dt->get<std::string>();
    const auto dtype = dtype_from_name(dname);
    if (!dtype) throw file_error(path, fmt::format("unsupported dtype {}", dname), name);
    if (!sh->is_array()) throw file_error(path, "shape is not an array", name);
    Shape shape;
    // The product of all dims (zeros counted as 1) must fit int64, so no later shape or
    // stride arithmetic can overflow even for zero-size tensors.
    int64_t bound = 1;
    int64_t numel = 1;
    for (const json& d : *sh) {
      const uint64_t u = json_uint(d, path, name, "shape");
      const int64_t dim = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                              ? -1
                              : static_cast<int64_t>(u);
      if (dim < 0 || __builtin_mul_overflow(bound, std::max<int64_t>(dim, 1), &bound))
        throw file_error(path, fmt::format("shape {} overflows", sh->dump()), name);
      numel *= dim;
      shape.push_back(dim);
    }
    if (!off->is_array() || off->size() != 2)
      throw file_error(path, "data_offsets is not a [begin, end] pair", name);
    const uint64_t b = json_uint((*off)[0], path, name, "data_offsets");
    const uint64_t e = json_uint((*off)[1], path, name, "data_offsets");
    if (b > e || e > data_size)
      throw file_error(
          path,
          fmt::format("data_offsets [{}, {}] outside the data region of {} bytes", b, e, data_size),
          name);
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(numel), dtype_size(*dtype), &nbytes) ||
        nbytes != e - b)
      throw file_error(
          path,
          fmt::format("shape {} of {} needs {} bytes but data_offsets [{}, {}] span {}",
                      shape_str(shape), dname, nbytes, b, e, e - b),
          name);
    Entry entry{*dtype, std::move(shape), data_start + b, data_start + e};
    auto [it, inserted] = st.entries_.emplace(name, std::move(entry));
    EXQ_ASSERT(inserted);
    st.names_.push_back(name);
    ranges.push_back({it->second.begin, it->second.end, &it->first});
  }

  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end)
      throw file_error(
          path,
          fmt::format("data overlaps tensor '{}' (bytes [{}, {}) vs [{}, {}))", *ranges[i - 1].name,
                      ranges[i].begin - data_start, ranges[i].end - data_start,
                      ranges[i - 1].begin - data_start, ranges[i - 1].end - data_start),
          *ranges[i].name);
  }
  st.file_ = std::move(file);
  return st;
}

TensorView SafetensorsFile::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw file_error(path(), "no such tensor", name);
  const Entry& e = it->second;
  // Read-only mapping: the const_cast only satisfies TensorView's untyped pointer.
  auto* p = const_cast<uint8_t*>(file_.data()) + e.begin;
  return TensorView(p, e.dtype, e.shape);
}

// ---------------------------------------------------------------------------------------
// SafetensorsModel

namespace {

json read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw file_error(path, "cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw file_error(path, fmt::format("not valid JSON: {}", e.what()));
  }
}

}  // namespace

SafetensorsModel SafetensorsModel::open(const fs::path& dir) {
  SafetensorsModel m = open_files(dir);
  m.select_language_model();
  m.split_fused_experts();
  return m;
}

void SafetensorsModel::split_fused_experts() {
  struct Fused {
    const char* suffix;
    int part;  // 0: gate and up, 1: down, 2: router
  };
  static constexpr Fused kFused[] = {{".block_sparse_moe.input_linear.weight", 0},
                                     {".block_sparse_moe.experts.gate_up_proj", 0},
                                     {".block_sparse_moe.output_linear.weight", 1},
                                     {".block_sparse_moe.experts.down_proj", 1},
                                     {".block_sparse_moe.router.layer.weight", 2},
                                     {".block_sparse_moe.router.weight", 2}};
  std::vector<std::pair<std::string, size_t>> found;
  for (const auto& entry : where_) found.push_back(entry);
  for (const auto& entry : found) {
    const std::string& name = entry.first;
    const size_t file = entry.second;  // not a structured binding: the lambda below captures it
    for (const Fused& f : kFused) {
      if (!name.ends_with(f.suffix)) continue;
      const std::string block = name.substr(0, name.size() - std::strlen(f.suffix)) + ".block_sparse_moe.";
      const std::string stored = stored_name(name);
      const TensorView t = files_[file].get(stored);
      auto add = [&](const std::string& alias, Part part) {
        if (!where_.emplace(alias, file).second)
          throw file_error(files_[file].path(), fmt::format("both {} and {} are stored", stored, alias), stored);
        stored_[alias] = stored;
        if (part.index >= 0) parts_.emplace(alias, part);
      };
      if (f.part == 2) {
        add(block + "gate.weight", {-1, 0, 0});
      } else {
        if (t.rank() != 3 || (f.part == 0 && t.dim(1) % 2 != 0))
          throw file_error(files_[file].path(),
                           fmt::format("fused experts: expected [experts, {}, {}], got {}",
                                       f.part == 0 ? "2 x intermediate" : "hidden",
                                       f.part == 0 ? "hidden" : "intermediate", shape_str(t.shape())),
                           stored);
        const int64_t rows = t.dim(1), half = rows / 2;
        for (int64_t e = 0; e < t.dim(0); ++e) {
          const std::string expert = block + fmt::format("experts.{}.", e);
          if (f.part == 0) {
            add(expert + "w1.weight", {e, 0, half});
            add(expert + "w3.weight", {e, half, rows});
          } else {
            add(expert + "w2.weight", {e, 0, rows});
          }
        }
      }
      where_.erase(name);
      stored_.erase(name);
      break;
    }
  }
}

void SafetensorsModel::select_language_model() {
  if (where_.count("model.embed_tokens.weight")) return;
  if (where_.count("embed_tokens.weight")) {  // a base model's own names (Qwen3-Embedding)
    std::unordered_map<std::string, size_t> kept;
    for (const auto& [name, file] : where_) {
      const std::string plain = name.starts_with("lm_head.") ? name : "model." + name;
      kept.emplace(plain, file);
      if (plain != name) stored_.emplace(plain, name);
    }
    where_ = std::move(kept);
    return;
  }
  for (const char* prefix : {"language_model.model.", "model.language_model."}) {
    if (!where_.count(std::string(prefix) + "embed_tokens.weight")) continue;
    prefix_ = prefix;
    std::unordered_map<std::string, size_t> kept;
    for (const auto& [name, file] : where_) {
      std::string plain;
      if (name.starts_with(prefix_)) plain = "model." + name.substr(prefix_.size());
      else if (name == "language_model.lm_head.weight" || name == "lm_head.weight") plain = "lm_head.weight";
      else continue;  // the vision tower, the projector
      kept.emplace(plain, file);
      if (plain != name) stored_.emplace(plain, name);
    }
    where_ = std::move(kept);
    return;
  }
}

const std::string& SafetensorsModel::stored_name(const std::string& name) const {
  auto it = stored_.find(name);
  return it == stored_.end() ? name : it->second;
}

SafetensorsModel SafetensorsModel::open_files(const fs::path& dir) {
  SafetensorsModel m;
  m.dir_ = dir;
  auto add_file = [&](const fs::path& p) {
    m.files_.push_back(SafetensorsFile::open(p));
    const size_t idx = m.files_.size() - 1;
    for (const std::string& name : m.files_.back().names()) {
      auto [it, inserted] = m.where_.emplace(name, idx);
      if (!inserted)
        throw file_error(
            p, fmt::format("tensor also present in {}", m.files_[it->second].path().string()),
            name);
    }
  };

  std::error_code ec;
  if (fs::is_regular_file(dir, ec)) {
    add_file(dir);
    return m;
  }
  if (!fs::is_directory(dir, ec)) throw file_error(dir, "no such model folder or file");

  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    const json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw file_error(index_path, "no weight_map object");
    // Shards in first-mention order; each named tensor must be in the shard it names.
    std::vector<std::string> shard_order;
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string())
        throw file_error(index_path, "weight_map value is not a string", tensor);
      const std::string f = file.get<std::string>();
      const fs::path fp(f);
      if (f.empty() || fp.is_absolute() || fp.has_parent_path())
        throw file_error(index_path, fmt::format("shard name '{}' is not a plain file name", f),
                         tensor);
      if (!by_shard.count(f)) shard_order.push_back(f);
      by_shard[f].push_back(tensor);
    }
    for (const std::string& f : shard_order) {
      const fs::path shard = dir / f;
      if (!fs::is_regular_file(shard, ec))
        throw file_error(index_path, fmt::format("shard {} is missing", shard.string()),
                         by_shard[f].front());
      add_file(shard);
      const SafetensorsFile& sf = m.files_.back();
      for (const std::string& t : by_shard[f])
        if (!sf.contains(t))
          throw file_error(shard,
                           fmt::format("tensor listed in {} is not in this shard",
                                       index_path.filename().string()),
                           t);
    }
    return m;
  }
  if (fs::is_regular_file(dir / "model.safetensors", ec)) {
    add_file(dir / "model.safetensors");
    return m;
  }
  std::vector<fs::path> found;
  for (const auto& de : fs::directory_iterator(dir, ec))
    if (de.path().extension() == ".safetensors" && de.is_regular_file(ec))
      found.push_back(de.path());
  if (ec) throw file_error(dir, fmt::format("cannot list folder: {}", ec.message()));
  if (found.empty()) throw file_error(dir, "no .safetensors files in folder");
  std::sort(found.begin(), found.end());
  for (const fs::path& p : found) add_file(p);
  return m;
}

TensorView SafetensorsModel::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw file_error(dir_, "no such tensor", name);
  const TensorView t = files_[it->second].get(stored_name(name));
  const auto part = parts_.find(name);
  if (part == parts_.end()) return t;
  const Part& p = part->second;
  return t.slice0(p.index, p.index + 1).reshape({t.dim(1), t.dim(2)}).slice0(p.row_begin, p.row_end);
}

std::vector<std::string> SafetensorsModel::names() const {
  std::unordered_map<std::string, std::vector<std::string>> plain;  // stored -> names
  for (const auto& [name, stored] : stored_) plain[stored].push_back(name);
  // Parts in the order of their expert and rows (w1 before w3).
  const auto order = [&](const std::string& a, const std::string& b) {
    const auto pa = parts_.find(a), pb = parts_.find(b);
    if (pa == parts_.end() || pb == parts_.end()) return a < b;
    return pa->second.index != pb->second.index ? pa->second.index < pb->second.index
                                                : pa->second.row_begin < pb->second.row_begin;
  };
  std::vector<std::string> out;
  for (const SafetensorsFile& f : files_)
    for (const std::string& n : f.names()) {
      auto p = plain.find(n);
      std::vector<std::string> names = p == plain.end() ? std::vector<std::string>{n} : p->second;
      std::sort(names.begin(), names.end(), order);
      for (const std::string& name : names) {
        auto w = where_.find(name);
        if (w != where_.end() && w->second == static_cast<size_t>(&f - files_.data()) && stored_name(name) == n)
          out.push_back(name);
      }
    }
  return out;
}

const fs::path& SafetensorsModel::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw file_error(dir_, "no such tensor", name);
  return files_[it->second].path();
}

}  // namespace exq::io
