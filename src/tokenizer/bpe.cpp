#include "tokenizer/bpe.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace exq::tokenizer {

using detail::Json;
using detail::json_path;

namespace {

struct QueueEntry {
  int32_t rank, pos, new_id;
};
// std heap functions build a max-heap: "greater" entries (higher rank, then further right)
// sink, so the lowest rank, leftmost merge is on top.
bool queue_after(const QueueEntry& x, const QueueEntry& y) {
  return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
}

std::pair<std::string, std::string> parse_merge(const Json& m, const std::string& path) {
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
      detail::json_fail(path, fmt::format("merge \"{}\" is not two tokens separated by one space", s));
    return {s.substr(0, sp), s.substr(sp + 1)};
  }
  if (m.is_array()) {
    if (m.size() != 2) detail::json_fail(path, fmt::format("merge has {} elements, expected 2", m.size()));
    return {detail::json_string(m[0], json_path(path, size_t{0})),
            detail::json_string(m[1], json_path(path, size_t{1}))};
  }
  detail::json_fail(path, "expected string \"a b\" or array [a, b], got " + detail::json_type_name(m));
}

}  // namespace

std::unique_ptr<BpeModel> BpeModel::from_json(const Json& model, const std::string& path) {
  detail::json_expect_object(model, path);
  if (const Json* type = detail::json_opt(model, "type", path)) {
    const std::string t = detail::json_string(*type, json_path(path, "type"));
    if (t != "BPE") detail::json_fail(json_path(path, "type"), fmt::format("model type '{}' is not supported (only BPE)", t));
  }
  auto m = std::make_unique<BpeModel>();
  // dropout only matters for training-time sampling; inference ignores it.
  if (const Json* d = detail::json_opt(model, "dropout", path); d && !d->is_number())
    detail::json_fail(json_path(path, "dropout"), "expected number or null, got " + detail::json_type_name(*d));
  m->fuse_unk_ = detail::json_bool_or(model, "fuse_unk", path, false);
  m->ignore_merges_ = detail::json_bool_or(model, "ignore_merges", path, false);
  const bool byte_fallback = detail::json_bool_or(model, "byte_fallback", path, false);
  if (const Json* u = detail::json_opt(model, "unk_token", path))
    m->unk_token_ = detail::json_string(*u, json_path(path, "unk_token"));
  m->continuing_subword_prefix_ = detail::json_string_or(model, "continuing_subword_prefix", path, "");
  m->end_of_word_suffix_ = detail::json_string_or(model, "end_of_word_suffix", path, "");

  const std::string vocab_path = json_path(path, "vocab");
  const Json& vocab = detail::json_field(model, "vocab", path);
  detail::json_expect_object(vocab, vocab_path);
  int32_t limit = 0;
  m->vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int32_t id = detail::json_token_id(it.value(), json_path(vocab_path, it.key()));
    m->vocab_[it.key()] = id;
    limit = std::max(limit, id + 1);
  }
  m->id_to_token_.assign(static_cast<size_t>(limit), std::string_view());
  for (const auto& [token, id] : m->vocab_) m->id_to_token_[static_cast<size_t>(id)] = token;
  m->small_char_id_.assign(kSmallChars, -1);
  for (const auto& [token, id] : m->vocab_) {
    size_t i = 0;
    if (token.empty()) continue;
    const char32_t cp = utf8_next(token, i);
    if (i == token.size() && cp < kSmallChars) m->small_char_id_[cp] = id;
  }
  if (byte_fallback) {
    m->byte_fallback_id_.assign(256, -1);
    for (int b = 0; b < 256; ++b)
      if (auto id = m->token_to_id(fmt::format("<0x{:02X}>", b))) m->byte_fallback_id_[b] = *id;
  }

  const std::string merges_path = json_path(path, "merges");
  const Json* merges = detail::json_opt(model, "merges", path);
  if (merges) detail::json_expect_array(*merges, merges_path);
  const size_t prefix_len = m->continuing_subword_prefix_.size();
  for (size_t i = 0; merges && i < merges->size(); ++i) {
    const std::string mp = json_path(merges_path, i);
    const Json& mj = (*merges)[i];
    if (mj.is_string() && mj.get_ref<const std::string&>().starts_with("#version")) continue;
    auto [a, b] = parse_merge(mj, mp);
    auto lookup = [&](const std::string& tok) {
      auto id = m->token_to_id(tok);
      if (!id) detail::json_fail(mp, fmt::format("merge token \"{}\" is not in the vocab", tok));
      return *id;
    };
    const int32_t a_id = lookup(a), b_id = lookup(b);
    if (prefix_len && !b.starts_with(m->continuing_subword_prefix_))
      detail::json_fail(mp, fmt::format("merge token \"{}\" lacks the continuing_subword_prefix", b));
    const int32_t new_id = lookup(a + b.substr(prefix_len));
    // A repeated pair takes its last rank, as HF's map construction does.
    m->merges_.insert(a_id, b_id, static_cast<int32_t>(i), new_id);
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string_view> BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit() || id_to_token_[static_cast<size_t>(id)].data() == nullptr) return std::nullopt;
  return id_to_token_[static_cast<size_t>(id)];
}

std::optional<int32_t> BpeModel::char_id(std::string_view ch, bool first, bool last) const {
  const bool prefix = !first && !continuing_subword_prefix_.empty();
  const bool suffix = last && !end_of_word_suffix_.empty();
  if (!prefix && !suffix) {
    size_t i = 0;
    const char32_t cp = utf8_next(ch, i);
    if (cp < kSmallChars) {
      const int32_t id = small_char_id_[cp];
      return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
    }
    return token_to_id(ch);
  }
  std::string s = prefix ? continuing_subword_prefix_ : std::string();
  s.append(ch);
  if (suffix) s += end_of_word_suffix_;
  return token_to_id(s);
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  if (cache_.find(word, out)) return;
  const size_t start = out.size();
  merge_word(word, out);
  cache_.insert(word, std::span<const int32_t>(out).subspan(start));
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, -1, 1});
    if (n > 0) symbols[static_cast<size_t>(n - 1)].next = n;
  };
  int32_t unk_id = -1;  // pending unk symbol, -1 when none
  auto unk_token_id = [&]() {
    auto id = token_to_id(*unk_token_);
    if (!id) throw Error(fmt::format("unk_token \"{}\" is not in the vocab", *unk_token_));
    return *id;
  };
  size_t i = 0;
  while (i < word.size()) {
    const size_t begin = i;
    utf8_next(word, i);
    const std::string_view ch = word.substr(begin, i - begin);
    const bool first = begin == 0, last = i == word.size();
    if (auto id = char_id(ch, first, last)) {
      if (unk_id >= 0) add(unk_id);
      unk_id = -1;
      add(*id);
      continue;
    }
    if (!byte_fallback_id_.empty()) {
      // HF falls back on the bytes of the piece as looked up (with prefix/suffix applied).
      std::string piece = !first ? continuing_subword_prefix_ : std::string();
      piece.append(ch);
      if (last) piece += end_of_word_suffix_;
      const bool all = std::all_of(piece.begin(), piece.end(), [&](char c) {
        return byte_fallback_id_[static_cast<unsigned char>(c)] >= 0;
      });
      if (all) {
        for (char c : piece) add(byte_fallback_id_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_token_) {
      if (unk_id >= 0 && !fuse_unk_) add(unk_id);
      if (unk_id < 0 || !fuse_unk_) unk_id = unk_token_id();
    }
    // Without an unk_token the character is dropped, as in HF.
  }
  if (unk_id >= 0) add(unk_id);
  merge_symbols(symbols);
  for (const Symbol& s : symbols)
    if (s.len) out.push_back(s.id);
}

void BpeModel::merge_symbols(std::vector<Symbol>& symbols) const {
  if (symbols.size() < 2 || merges_.empty()) return;
  thread_local std::vector<QueueEntry> queue;
  queue.clear();
  for (size_t p = 0; p + 1 < symbols.size(); ++p)
    if (const MergeTable::Entry* m = merges_.find(symbols[p].id, symbols[p + 1].id))
      queue.push_back({m->rank, static_cast<int32_t>(p), m->new_id});
  std::make_heap(queue.begin(), queue.end(), queue_after);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), queue_after);
    const QueueEntry top = queue.back();
    queue.pop_back();
    Symbol& cur = symbols[static_cast<size_t>(top.pos)];
    if (cur.len == 0 || cur.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(cur.next)];
    // Stale entry: one side changed since it was queued.
    const MergeTable::Entry* m = merges_.find(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    cur.len += right.len;
    right.len = 0;
    cur.next = right.next;
    if (cur.next >= 0) symbols[static_cast<size_t>(cur.next)].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeTable::Entry* pm = merges_.find(symbols[static_cast<size_t>(cur.prev)].id, cur.id)) {
        queue.push_back({pm->rank, cur.prev, pm->new_id});
        std::push_heap(queue.begin(), queue.end(), queue_after);
      }
    }
    if (cur.next >= 0) {
      if (const MergeTable::Entry* nm = merges_.find(cur.id, symbols[static_cast<size_t>(cur.next)].id)) {
        queue.push_back({nm->rank, top.pos, nm->new_id});
        std::push_heap(queue.begin(), queue.end(), queue_after);
      }
    }
  }
}

}  // namespace exq::tokenizer
