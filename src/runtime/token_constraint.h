// A grammar applied to tokens: which ids of a vocabulary may come next so that the generated
// text stays a prefix of a sentence of the grammar. TokenVocab holds every id's bytes in a
// trie (built once per tokenizer); TokenConstraint follows one generation.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"

namespace exq::runtime {

class TokenVocab {
 public:
  // bytes[id]: the text id adds (Tokenizer::token_bytes); special[id] != 0: a control token,
  // never text (an eos id may still end a complete sentence).
  TokenVocab(std::vector<std::string> bytes, std::vector<uint8_t> special);
  // The first `vocab` ids of `tok` (the model's logits row; ids past the tokenizer's are empty).
  static std::shared_ptr<const TokenVocab> from_tokenizer(const tokenizer::Tokenizer& tok, int64_t vocab);

  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  const std::string& bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
  bool special(int32_t id) const { return special_[static_cast<size_t>(id)] != 0; }

  // Trie of the non-empty, non-special tokens' bytes; node 0 is the root.
  struct Node {
    uint32_t first_child = 0;  // 0: none
    uint32_t next_sibling = 0;
    uint32_t ids_begin = 0;    // ids ending here: ids()[ids_begin, ids_end)
    uint32_t ids_end = 0;
    uint8_t byte = 0;
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  std::vector<std::string> bytes_;
  std::vector<uint8_t> special_;
  std::vector<Node> nodes_;
  std::vector<int32_t> ids_;
};

// The grammar's state after the tokens accepted so far.
class TokenConstraint {
 public:
  TokenConstraint(std::shared_ptr<const grammar::Grammar> grammar, std::shared_ptr<const TokenVocab> vocab,
                  std::span<const int32_t> eos_ids);

  // An eos id when the text is a whole sentence; otherwise a non-special token whose bytes the
  // grammar accepts here (never an empty one).
  bool allows(int32_t id) const;
  // [vocab] flags of every allowed id: a walk of the trie (a few ms for 50k tokens inside a
  // JSON string), for a refused draw only; reused while the grammar's state stays the same.
  // Throws exq::Error when no token is allowed (the grammar needs text no token spells).
  const std::vector<uint8_t>& allowed() const;
  // Consumes `id`; throws exq::Error when it is not allowed.
  void accept(int32_t id);
  // Whole sentence and nothing may follow: generation is over.
  bool finished() const { return matcher_.complete() && !matcher_.can_continue(); }

 private:
  bool is_eos(int32_t id) const;

  std::shared_ptr<const TokenVocab> vocab_;
  grammar::GrammarMatcher matcher_;
  std::vector<int32_t> eos_;
  // The last mask and the state it was made for (inside a string most tokens keep the state).
  mutable std::optional<grammar::GrammarMatcher> mask_state_;
  mutable std::vector<uint8_t> mask_;
};

}  // namespace exq::runtime
