#include "tokenizer/post_processor.h"

#include <map>

#include "core/error.h"

namespace exq::tokenizer {

using detail::Json;
using detail::json_path;

namespace {

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> items) : items_(std::move(items)) {}
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    for (const auto& p : items_) ids = p->process(std::move(ids));
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

class NoopProcessor final : public PostProcessor {
 public:
  std::vector<int32_t> process(std::vector<int32_t> ids) const override { return ids; }
};

// The "single" template flattened to a list of pieces: a fixed list of special ids, or the
// sequence itself (empty `ids` with `sequence` set).
class TemplateProcessor final : public PostProcessor {
 public:
  struct Item {
    bool sequence = false;
    std::vector<int32_t> ids;
  };
  explicit TemplateProcessor(std::vector<Item> items) : items_(std::move(items)) {}
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    std::vector<int32_t> out;
    for (const Item& it : items_) {
      const auto& src = it.sequence ? ids : it.ids;
      out.insert(out.end(), src.begin(), src.end());
    }
    return out;
  }

 private:
  std::vector<Item> items_;
};

class WrapProcessor final : public PostProcessor {
 public:
  WrapProcessor(int32_t cls, int32_t sep) : cls_(cls), sep_(sep) {}
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
    return ids;
  }

 private:
  int32_t cls_, sep_;
};

// ["<s>", 0] -> 0
int32_t token_pair_id(const Json& v, const std::string& path) {
  detail::json_expect_array(v, path);
  if (v.size() != 2) detail::json_fail(path, fmt::format("expected [token, id], got {} elements", v.size()));
  detail::json_string(v[0], json_path(path, size_t{0}));
  return detail::json_token_id(v[1], json_path(path, size_t{1}));
}

std::unique_ptr<PostProcessor> make_template(const Json& v, const std::string& path) {
  std::map<std::string, std::vector<int32_t>> specials;
  if (const Json* sp = detail::json_opt(v, "special_tokens", path)) {
    const std::string spp = json_path(path, "special_tokens");
    detail::json_expect_object(*sp, spp);
    for (auto it = sp->begin(); it != sp->end(); ++it) {
      const std::string ep = json_path(spp, it.key());
      const Json& ids = detail::json_field(it.value(), "ids", ep);
      detail::json_expect_array(ids, json_path(ep, "ids"));
      std::vector<int32_t> list;
      for (size_t i = 0; i < ids.size(); ++i) list.push_back(detail::json_token_id(ids[i], json_path(json_path(ep, "ids"), i)));
      specials[it.key()] = std::move(list);
    }
  }
  const std::string sp = json_path(path, "single");
  const Json& single = detail::json_field(v, "single", path);
  detail::json_expect_array(single, sp);
  std::vector<TemplateProcessor::Item> items;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string ip = json_path(sp, i);
    detail::json_expect_object(single[i], ip);
    if (const Json* s = detail::json_opt(single[i], "SpecialToken", ip)) {
      const std::string name = detail::json_string(detail::json_field(*s, "id", json_path(ip, "SpecialToken")),
                                                   json_path(json_path(ip, "SpecialToken"), "id"));
      auto found = specials.find(name);
      if (found == specials.end())
        detail::json_fail(ip, fmt::format("special token '{}' is not in special_tokens", name));
      items.push_back({false, found->second});
    } else if (detail::json_opt(single[i], "Sequence", ip)) {
      items.push_back({true, {}});
    } else {
      detail::json_fail(ip, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
  }
  return std::make_unique<TemplateProcessor>(std::move(items));
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const Json& v, const std::string& path, int depth) {
  if (depth > detail::kMaxComponentDepth) detail::json_fail(path, "Sequence nesting too deep");
  const std::string type = detail::json_string(detail::json_field(v, "type", path), json_path(path, "type"));
  if (type == "Sequence") {
    const std::string ip = json_path(path, "processors");
    const Json& items = detail::json_field(v, "processors", path);
    detail::json_expect_array(items, ip);
    std::vector<std::unique_ptr<PostProcessor>> list;
    for (size_t i = 0; i < items.size(); ++i)
      list.push_back(make_post_processor(items[i], json_path(ip, i), depth + 1));
    return std::make_unique<SequenceProcessor>(std::move(list));
  }
  if (type == "ByteLevel") return std::make_unique<NoopProcessor>();
  if (type == "TemplateProcessing") return make_template(v, path);
  if (type == "RobertaProcessing" || type == "BertProcessing")
    return std::make_unique<WrapProcessor>(
        token_pair_id(detail::json_field(v, "cls", path), json_path(path, "cls")),
        token_pair_id(detail::json_field(v, "sep", path), json_path(path, "sep")));
  detail::json_fail(json_path(path, "type"), fmt::format("post-processor type '{}' is not supported", type));
}

}  // namespace exq::tokenizer
