// The BPE model of a Hugging Face tokenizer.json: vocab, ranked merges, byte_fallback (<0xNN>
// pieces), unk_token / fuse_unk, ignore_merges, continuing_subword_prefix / end_of_word_suffix.
// tokenize() turns one pre-token (already in the model's alphabet, e.g. byte-level mapped) into
// ids with HF's merge order: lowest rank first, leftmost on ties. Thread-safe: the only
// mutable state is the per-word cache, which synchronizes itself.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe_tables.h"
#include "tokenizer/json_util.h"

namespace exq::tokenizer {

// Heterogeneous string hashing so string_view lookups do not allocate.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // `path` is the JSON path of the model object ("model") for error messages.
  static std::unique_ptr<BpeModel> from_json(const detail::Json& model, const std::string& path);

  // Appends the ids of one pre-token. An empty word yields nothing.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullopt when the id is not in the vocab.
  std::optional<std::string_view> id_to_token(int32_t id) const;
  // One past the largest vocab id.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // linked list over surviving symbols, -1 at the ends
    int32_t len;         // bytes of the word covered; 0 once merged away
  };

  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_symbols(std::vector<Symbol>& symbols) const;
  std::optional<int32_t> char_id(std::string_view ch, bool first, bool last) const;

  StringIdMap vocab_;
  std::vector<std::string_view> id_to_token_;  // views of vocab_ keys; null data when unused
  MergeTable merges_;
  std::vector<int32_t> small_char_id_;  // id of single code points < kSmallChars, -1 if none
  std::vector<int32_t> byte_fallback_id_;  // <0xNN> ids, empty unless byte_fallback
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  mutable WordCache cache_;  // BPE results per pre-token word
  static constexpr char32_t kSmallChars = 0x800;
};

}  // namespace exq::tokenizer
