// Safetensors reading (zero-copy views into a read-only mmap) and atomic writing, single files
// and sharded Hugging Face folders with model.safetensors.index.json. The parser validates
// every header field against the file before handing out views, so a corrupt file becomes an
// exq::Error naming the file and tensor, never an out-of-bounds read.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"
#include "io/mmap_file.h"

namespace exq::io {

// Largest header accepted; real headers are a few hundred KB even for huge models.
inline constexpr size_t kSafetensorsMaxHeader = 100u * 1000u * 1000u;

// One mmapped .safetensors file. Views returned by get() point into the mapping: they stay
// valid while this object (or what it was moved into) lives, and must not be written through.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);
  // Parses bytes already loaded (tests, fuzzers); errors name file.path().
  static SafetensorsFile parse(MappedFile file);

  const std::vector<std::string>& names() const { return names_; }  // in file order
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  TensorView get(const std::string& name) const;  // throws Error{file, tensor} when missing
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return file_.path(); }

 private:
  struct Entry {
    DType dtype;
    Shape shape;
    size_t begin;  // absolute offsets in the file
    size_t end;
  };

  MappedFile file_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// A model folder: model.safetensors, or shards listed by model.safetensors.index.json, or else
// every *.safetensors file in it (e.g. output-0000N-of-0000M). A path to one .safetensors
// file is also accepted.
// A multimodal checkpoint's language model (Gemma 3 4B-27B: language_model.model.* or
// model.language_model.*, its head language_model.lm_head or lm_head) is presented under the
// plain names (model.*, lm_head.weight); the other tensors (the vision tower, the projector)
// are left out of names() and contains(). A base model's tensors saved without the "model."
// prefix (embed_tokens.weight, layers.N..., norm.weight: transformers' Qwen3Model, as the
// Qwen3-Embedding checkpoints are stored) are presented under model.*.
// Granite MoE's experts, stored fused (block_sparse_moe.input_linear [experts, 2 x inter, hidden]:
// each expert's gate rows then its up rows; output_linear [experts, hidden, inter]; transformers
// 5 names them experts.gate_up_proj / experts.down_proj), are presented as Mixtral's per-expert
// tensors, zero-copy views: block_sparse_moe.experts.E.w1 (gate), .w3 (up), .w2 (down), and the
// router (router.layer or router) as block_sparse_moe.gate.
class SafetensorsModel {
 public:
  static SafetensorsModel open(const std::filesystem::path& dir);

  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  TensorView get(const std::string& name) const;  // throws Error{dir, tensor} when missing
  std::vector<std::string> names() const;         // file by file, each in file order
  const std::filesystem::path& file_of(const std::string& name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // "language_model.model." or "model.language_model." when the names are a multimodal
  // checkpoint's language model, else empty.
  const std::string& language_model_prefix() const { return prefix_; }

 private:
  static SafetensorsModel open_files(const std::filesystem::path& dir);
  void select_language_model();
  void split_fused_experts();
  // The name a tensor has in its file.
  const std::string& stored_name(const std::string& name) const;

  std::filesystem::path dir_;
  std::vector<SafetensorsFile> files_;
  std::unordered_map<std::string, size_t> where_;  // tensor -> index into files_
  std::string prefix_;
  std::unordered_map<std::string, std::string> stored_;  // name -> name in its file, when they differ
  // A view of part of a stored tensor: rows [row_begin, row_end) of its index-th matrix.
  struct Part {
    int64_t index, row_begin, row_end;
  };
  std::unordered_map<std::string, Part> parts_;  // name -> its part of stored_name(name)
};

struct NamedTensor {
  std::string name;
  TensorView tensor;
};

// Atomic (temp + rename). Tensors are written sorted by (element size descending, name), the
// header padded with spaces so data starts 8-byte aligned and every tensor is aligned to its
// element size, with no gaps (readable by the reference Python/Rust library).
// shard_bytes = 0: one file `path`. Otherwise files <stem>-0000N-of-0000M.safetensors next to
// `path` (each at most shard_bytes of data unless one tensor is larger) plus
// <stem>.safetensors.index.json (HF schema). Returns the files written, index last.
std::vector<std::filesystem::path> write_safetensors(
    const std::filesystem::path& path, const std::vector<NamedTensor>& tensors,
    const std::map<std::string, std::string>& metadata = {}, size_t shard_bytes = 0);

// Removes `<stem>.safetensors`, `<stem>.safetensors.index.json` and `<stem>-*.safetensors` beside
// `path` that are not among `written` (what write_safetensors returned for it): the files of an
// earlier write with another shard count would shadow the new ones.
void remove_stale_safetensors(const std::filesystem::path& path, const std::vector<std::filesystem::path>& written);

// Copies a model folder's files other than its weights (*.safetensors, their index, *.bin, *.pt,
// *.gguf) and the names in `skip` (config, tokenizer, generation files) into `to`, each
// atomically. Returns the files written.
std::vector<std::filesystem::path> copy_model_side_files(const std::filesystem::path& from,
                                                         const std::filesystem::path& to,
                                                         const std::vector<std::string>& skip = {});

}  // namespace exq::io
