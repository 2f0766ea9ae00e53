#include "runtime/token_constraint.h"

#include <algorithm>

#include "core/error.h"

namespace exq::runtime {

TokenVocab::TokenVocab(std::vector<std::string> bytes, std::vector<uint8_t> special)
    : bytes_(std::move(bytes)), special_(std::move(special)) {
  EXQ_CHECK(bytes_.size() == special_.size(), "token vocabulary: {} byte strings but {} special flags",
            bytes_.size(), special_.size());
  // Sorted ids give each node's children in byte order and its ids in one run.
  std::vector<int32_t> order;
  for (size_t i = 0; i < bytes_.size(); ++i)
    if (!special_[i] && !bytes_[i].empty()) order.push_back(static_cast<int32_t>(i));
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return bytes_[static_cast<size_t>(a)] < bytes_[static_cast<size_t>(b)]; });
  nodes_.emplace_back();
  std::vector<uint32_t> path{0};  // path[d]: the node at depth d of the previous token
  std::vector<uint32_t> last_child;  // per node: its last child so far (0: none)
  last_child.push_back(0);
  std::string prev;
  for (const int32_t id : order) {
    const std::string& b = bytes_[static_cast<size_t>(id)];
    size_t common = 0;  // bytes shared with the previous token: their nodes exist
    while (common < b.size() && common < prev.size() && b[common] == prev[common]) ++common;
    path.resize(common + 1);
    for (size_t d = common; d < b.size(); ++d) {
      const auto node = static_cast<uint32_t>(nodes_.size());
      Node n;
      n.byte = static_cast<uint8_t>(b[d]);
      nodes_.push_back(n);
      last_child.push_back(0);
      const uint32_t parent = path[d];
      if (last_child[parent] == 0) {
        nodes_[parent].first_child = node;
      } else {
        nodes_[last_child[parent]].next_sibling = node;
      }
      last_child[parent] = node;
      path.push_back(node);
    }
    Node& end = nodes_[path[b.size()]];
    if (end.ids_begin == end.ids_end) end.ids_begin = end.ids_end = static_cast<uint32_t>(ids_.size());
    ids_.push_back(id);  // equal byte strings are adjacent in `order`
    ++end.ids_end;
    prev = b;
  }
}

std::shared_ptr<const TokenVocab> TokenVocab::from_tokenizer(const tokenizer::Tokenizer& tok, int64_t vocab) {
  EXQ_CHECK(vocab > 0, "token vocabulary: {} tokens", vocab);
  std::vector<std::string> bytes(static_cast<size_t>(vocab));
  std::vector<uint8_t> special(static_cast<size_t>(vocab), 0);
  const int64_t known = std::min<int64_t>(vocab, tok.vocab_size());
  for (int32_t id = 0; id < known; ++id) {
    special[static_cast<size_t>(id)] = tok.is_special(id) ? 1 : 0;
    if (!special[static_cast<size_t>(id)]) bytes[static_cast<size_t>(id)] = tok.token_bytes(id);
  }
  return std::make_shared<const TokenVocab>(std::move(bytes), std::move(special));
}

TokenConstraint::TokenConstraint(std::shared_ptr<const grammar::Grammar> grammar,
                                 std::shared_ptr<const TokenVocab> vocab, std::span<const int32_t> eos_ids)
    : vocab_(std::move(vocab)), matcher_(std::move(grammar)), eos_(eos_ids.begin(), eos_ids.end()) {
  EXQ_CHECK(vocab_ != nullptr, "a grammar needs the token vocabulary");
}

bool TokenConstraint::is_eos(int32_t id) const { return std::find(eos_.begin(), eos_.end(), id) != eos_.end(); }

bool TokenConstraint::allows(int32_t id) const {
  if (id < 0 || id >= vocab_->size()) return false;
  if (is_eos(id)) return matcher_.complete();
  if (vocab_->special(id)) return false;
  const std::string& b = vocab_->bytes(id);
  return !b.empty() && matcher_.accepts(b);
}

const std::vector<uint8_t>& TokenConstraint::allowed() const {
  if (mask_state_ && mask_state_->same_state(matcher_)) return mask_;
  mask_state_.reset();  // until the walk below completes
  std::vector<uint8_t>& mask = mask_;
  mask.assign(static_cast<size_t>(vocab_->size()), 0);
  if (matcher_.complete())
    for (const int32_t id : eos_)
      if (id >= 0 && id < vocab_->size()) mask[static_cast<size_t>(id)] = 1;
  const auto& nodes = vocab_->nodes();
  const auto& ids = vocab_->ids();
  // Depth-first over the trie, one matcher per depth (copy-assigned, reusing its storage).
  struct Frame {
    uint32_t child;  // next child of this depth's node to try (0: done)
  };
  std::vector<grammar::GrammarMatcher> state{matcher_};
  std::vector<Frame> stack{{nodes[0].first_child}};
  while (!stack.empty()) {
    const size_t d = stack.size() - 1;
    const uint32_t c = stack[d].child;
    if (c == 0) {
      stack.pop_back();
      continue;
    }
    stack[d].child = nodes[c].next_sibling;
    if (state.size() < d + 2) state.push_back(state[d]);
    else state[d + 1] = state[d];
    if (!state[d + 1].accept_byte(nodes[c].byte)) continue;
    for (uint32_t i = nodes[c].ids_begin; i < nodes[c].ids_end; ++i) mask[static_cast<size_t>(ids[i])] = 1;
    if (nodes[c].first_child != 0) stack.push_back({nodes[c].first_child});
  }
  EXQ_CHECK(std::find(mask.begin(), mask.end(), uint8_t{1}) != mask.end(),
            "grammar: no token of the vocabulary can continue the text here");
  mask_state_ = matcher_;
  return mask;
}

void TokenConstraint::accept(int32_t id) {
  EXQ_CHECK(allows(id), "grammar: token {} cannot continue the text here", id);
  if (!is_eos(id)) matcher_.accept(vocab_->bytes(id));
}

}  // namespace exq::runtime
