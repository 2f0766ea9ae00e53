#include "chat/json_dump.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "chat/text.h"

namespace exq::chat {

namespace {

class Dumper {
 public:
  Dumper(const JsonDumpOptions& o, Budget& budget) : o_(o), budget_(budget) {
    item_sep_ = o.item_separator ? *o.item_separator : (o.indent ? "," : ", ");
  }

  void dump(const Value& v, int level) {
    budget_.step();
    switch (v.type()) {
      case Value::Type::None: out_ += "null"; break;
      case Value::Type::Bool: out_ += v.as_bool() ? "true" : "false"; break;
      case Value::Type::Int: out_ += std::to_string(v.as_int()); break;
      case Value::Type::Float: dump_float(v.as_double()); break;
      case Value::Type::String: dump_string(v.as_string()); break;
      case Value::Type::List:
        if (v.is_generator()) throw Error("Object of type generator is not JSON serializable");
        dump_list(v.as_list(), level);
        break;
      case Value::Type::Dict: dump_dict(v.as_dict(), level); break;
      default:
        throw Error(fmt::format("Object of type {} is not JSON serializable", type_name(v)));
    }
    budget_.check_size(out_.size());
  }

  std::string take() { return std::move(out_); }

 private:
  void newline(int level) {
    if (!o_.indent) return;
    out_ += '\n';
    for (int i = 0; i < level; ++i) {
      out_ += *o_.indent;
      budget_.check_size(out_.size());
    }
  }

  void dump_float(double d) {
    if (std::isnan(d)) out_ += "NaN";
    else if (std::isinf(d)) out_ += d < 0 ? "-Infinity" : "Infinity";
    else out_ += py_float_repr(d);
  }

  void dump_string(const std::string& s) {
    out_ += '"';
    for (size_t pos = 0; pos < s.size();) {
      const size_t start = pos;
      const char32_t cp = decode_utf8(s, pos);
      switch (cp) {
        case '"': out_ += "\\\""; continue;
        case '\\': out_ += "\\\\"; continue;
        case '\n': out_ += "\\n"; continue;
        case '\r': out_ += "\\r"; continue;
        case '\t': out_ += "\\t"; continue;
        case '\b': out_ += "\\b"; continue;
        case '\f': out_ += "\\f"; continue;
        default: break;
      }
      if (cp < 0x20 || (o_.ensure_ascii && cp >= 0x7f)) {
        if (cp >= 0x10000) {
          const char32_t c = cp - 0x10000;
          out_ += fmt::format("\\u{:04x}\\u{:04x}", static_cast<uint32_t>(0xd800 + (c >> 10)),
                              static_cast<uint32_t>(0xdc00 + (c & 0x3ff)));
        } else {
          out_ += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
        }
      } else {
        out_.append(s, start, pos - start);
      }
    }
    out_ += '"';
  }

  void dump_list(const List& l, int level) {
    if (l.items.empty()) {
      out_ += "[]";
      return;
    }
    out_ += '[';
    for (size_t i = 0; i < l.items.size(); ++i) {
      if (i) out_ += item_sep_;
      newline(level + 1);
      dump(l.items[i], level + 1);
    }
    newline(level);
    out_ += ']';
  }

  void dump_dict(const Dict& d, int level) {
    if (d.items.empty()) {
      out_ += "{}";
      return;
    }
    std::vector<const std::pair<std::string, Value>*> items;
    for (const auto& item : d.items) items.push_back(&item);
    if (o_.sort_keys)
      std::stable_sort(items.begin(), items.end(),
                       [](const auto* a, const auto* b) { return a->first < b->first; });
    out_ += '{';
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out_ += item_sep_;
      newline(level + 1);
      dump_string(items[i]->first);
      out_ += o_.key_separator;
      dump(items[i]->second, level + 1);
    }
    newline(level);
    out_ += '}';
  }

  const JsonDumpOptions& o_;
  Budget& budget_;
  std::string item_sep_;
  std::string out_;
};

}  // namespace

std::string json_dumps(const Value& v, const JsonDumpOptions& options, Budget& budget) {
  Dumper d(options, budget);
  d.dump(v, 0);
  return d.take();
}

}  // namespace exq::chat
