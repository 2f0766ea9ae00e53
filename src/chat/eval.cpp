#include "chat/eval.h"

#include <fmt/format.h>

#include "chat/builtins.h"
#include "chat/filters.h"
#include "chat/lexer.h"
#include "chat/operators.h"

namespace exq::chat {

namespace {

using ast::Expr;
using ast::ExprKind;
using ast::Stmt;
using ast::StmtKind;

// An error that already names its template line; outer nodes pass it through unchanged.
class LocatedError : public Error {
 public:
  using Error::Error;
};

// Variables of one template level: the globals, the template, a macro call, a loop iteration
// or a {% with %} block. Lookups walk outwards through parent scopes.
struct Scope {
  Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent)
      for (const auto& [k, v] : s->vars)
        if (k == name) return &v;
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [k, old] : vars) {
      if (k == name) {
        old = std::move(v);
        return;
      }
    }
    vars.emplace_back(name, std::move(v));
  }
};

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  explicit Renderer(const Limits& limits) : budget_(limits) {}

  std::string run(const ast::Program& program, const Value& context) {
    Scope globals;
    globals.vars = global_functions();
    Scope top{&globals, context.as_dict().items};  // dict keys are unique already
    template_scope_ = &top;
    std::string out;
    out_ = &out;
    exec_body(program.body, top);
    return out;
  }

 private:
  size_t max_bytes() const { return budget_.limits().max_output_bytes; }

  void write(std::string_view s) {
    budget_.check_size(out_->size() + s.size());
    out_->append(s);
  }

  [[noreturn]] static void relocate(const Error& e, int line, int col) {
    throw LocatedError(location(line, col) + ": " + e.message());
  }

  // Renders body into a string of its own (macros, {% set %} and {% filter %} blocks).
  std::string capture(const ast::Body& body, Scope& scope, Flow* flow = nullptr) {
    std::string buf;
    std::string* saved = out_;
    out_ = &buf;
    struct Restore {
      std::string*& slot;
      std::string* value;
      ~Restore() { slot = value; }
    } restore{out_, saved};
    const Flow f = exec_body(body, scope);
    if (flow) *flow = f;
    return buf;
  }

  // ---- statements ----
  Flow exec_body(const ast::Body& body, Scope& scope) {
    for (const auto& s : body) {
      const Flow f = exec(*s, scope);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  // Counts evaluator recursion (exec and eval nest through macros and blocks).
  struct Nesting {
    explicit Nesting(int& depth) : depth_(depth) {
      if (depth_ >= kMaxRenderDepth)
        throw Error(fmt::format("template evaluation nested deeper than {} levels", kMaxRenderDepth));
      ++depth_;
    }
    ~Nesting() { --depth_; }
    int& depth_;
  };

  Flow exec(const Stmt& s, Scope& scope) {
    budget_.step();
    try {
      const Nesting nesting(depth_);
      return exec_inner(s, scope);
    } catch (const LocatedError&) {
      throw;
    } catch (const RaisedError&) {
      throw;
    } catch (const Error& e) {
      relocate(e, s.line, s.col);
    }
  }

  Flow exec_inner(const Stmt& s, Scope& scope) {
    switch (s.kind) {
      case StmtKind::Text:
        write(s.text);
        return Flow::Normal;
      case StmtKind::Output:
        write(to_str(eval(*s.expr, scope), max_bytes()));
        return Flow::Normal;
      case StmtKind::If:
        for (const auto& br : s.branches)
          if (!br.cond || eval(*br.cond, scope).truthy()) return exec_body(br.body, scope);
        return Flow::Normal;
      case StmtKind::For:
        exec_for(s, scope);
        return Flow::Normal;
      case StmtKind::Set: {
        Value v = eval(*s.expr, scope);
        if (s.attr.empty()) {
          assign(s.targets, std::move(v), scope);
          return Flow::Normal;
        }
        const Value* ns = scope.find(s.targets[0]);
        if (!ns || !ns->is_namespace())
          throw Error(fmt::format("cannot assign attribute '{}' on '{}': not a namespace() object",
                                  s.attr, s.targets[0]));
        if (holds_namespace(v)) throw Error("a namespace cannot hold another namespace");
        ns->namespace_dict().set(s.attr, std::move(v));
        return Flow::Normal;
      }
      case StmtKind::SetBlock: {
        Flow f = Flow::Normal;
        Value v(capture(s.body, scope, &f));
        if (s.expr) v = eval_on_block(*s.expr, v, scope);
        assign(s.targets, std::move(v), scope);
        return f;
      }
      case StmtKind::FilterBlock: {
        Flow f = Flow::Normal;
        const Value body(capture(s.body, scope, &f));
        write(to_str(eval_on_block(*s.expr, body, scope), max_bytes()));
        return f;
      }
      case StmtKind::Macro:
        scope.set(s.text, Value::function(s.text, [this, &s](CallArgs& a, Budget&) {
                    return call_macro(s, a);
                  }));
        return Flow::Normal;
      case StmtKind::Break:
        return Flow::Break;
      case StmtKind::Continue:
        return Flow::Continue;
      case StmtKind::Scope: {
        Scope inner{&scope, {}};
        for (const auto& p : s.params) inner.set(p.name, eval(*p.value, scope));
        return exec_body(s.body, inner);
      }
    }
    return Flow::Normal;
  }

  Value eval_on_block(const Expr& filter, const Value& block, Scope& scope) {
    const Value* saved = block_value_;
    block_value_ = &block;
    struct Restore {
      const Value*& slot;
      const Value* value;
      ~Restore() { slot = value; }
    } restore{block_value_, saved};
    return eval(filter, scope);
  }

  void assign(const std::vector<std::string>& targets, Value v, Scope& scope) {
    if (targets.size() == 1) {
      scope.set(targets[0], std::move(v));
      return;
    }
    if (!v.is_list() && !v.is_string() && !v.is_dict()) {
      if (v.is_undefined()) throw_undefined(v);
      throw Error(fmt::format("cannot unpack non-iterable {} object", type_name(v)));
    }
    const std::vector<Value> items = iterate(v, budget_);
    if (items.size() != targets.size())
      throw Error(fmt::format("{} values to unpack (expected {}, got {})",
                              items.size() < targets.size() ? "not enough" : "too many",
                              targets.size(), items.size()));
    for (size_t i = 0; i < targets.size(); ++i) scope.set(targets[i], items[i]);
  }

  static Value loop_object(size_t i, const std::vector<Value>& items) {
    const auto n = static_cast<int64_t>(items.size());
    const auto k = static_cast<int64_t>(i);
    Dict d;
    d.items.reserve(12);
    d.items.emplace_back("index", Value(k + 1));
    d.items.emplace_back("index0", Value(k));
    d.items.emplace_back("revindex", Value(n - k));
    d.items.emplace_back("revindex0", Value(n - k - 1));
    d.items.emplace_back("first", Value(k == 0));
    d.items.emplace_back("last", Value(k == n - 1));
    d.items.emplace_back("length", Value(n));
    d.items.emplace_back("depth", Value(int64_t{1}));
    d.items.emplace_back("depth0", Value(int64_t{0}));
    d.items.emplace_back("previtem", k > 0 ? items[i - 1] : Value::undefined("there is no previous item"));
    d.items.emplace_back("nextitem", k + 1 < n ? items[i + 1] : Value::undefined("there is no next item"));
    d.items.emplace_back("cycle", Value::function("cycle", [i](CallArgs& a, Budget&) {
                           if (a.pos.empty()) throw Error("no items for cycling given");
                           return a.pos[i % a.pos.size()];
                         }));
    return Value::dict(std::move(d));
  }

  void exec_for(const Stmt& s, Scope& scope) {
    std::vector<Value> items = iterate(eval(*s.expr, scope), budget_);
    if (s.cond) {
      std::vector<Value> kept;
      for (Value& item : items) {
        budget_.step();
        Scope probe{&scope, {}};
        assign(s.targets, item, probe);
        if (eval(*s.cond, probe).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    // Jinja runs the else block unless some iteration reached the end of its body: so after an
    // empty loop, and also when every iteration ended in break or continue.
    bool run_else = true;
    for (size_t i = 0; i < items.size(); ++i) {
      budget_.step();
      Scope iter{&scope, {}};
      assign(s.targets, items[i], iter);
      iter.set("loop", loop_object(i, items));
      const Flow f = exec_body(s.body, iter);
      if (f == Flow::Break) break;
      run_else = f == Flow::Continue && run_else;
    }
    if (run_else && !s.else_body.empty()) {
      Scope inner{&scope, {}};
      exec_body(s.else_body, inner);
    }
  }

  Value call_macro(const Stmt& m, CallArgs& a) {
    if (call_depth_ >= budget_.limits().max_call_depth)
      throw Error(fmt::format("macro calls nested deeper than {}", budget_.limits().max_call_depth));
    ++call_depth_;
    struct Depth {
      int& d;
      ~Depth() { --d; }
    } depth{call_depth_};
    if (a.pos.size() > m.params.size())
      throw Error(fmt::format("macro '{}' takes not more than {} argument(s)", m.text, m.params.size()));
    Scope local{template_scope_, {}};
    std::vector<bool> given(m.params.size(), false);
    for (size_t i = 0; i < a.pos.size(); ++i) local.set(m.params[i].name, a.pos[i]), given[i] = true;
    for (auto& [k, v] : a.kw) {
      size_t i = 0;
      while (i < m.params.size() && m.params[i].name != k) ++i;
      if (i == m.params.size()) throw Error(fmt::format("macro '{}' takes no keyword argument '{}'", m.text, k));
      if (given[i]) throw Error(fmt::format("macro '{}' got multiple values for argument '{}'", m.text, k));
      local.set(k, v);
      given[i] = true;
    }
    for (size_t i = 0; i < m.params.size(); ++i) {
      if (given[i]) continue;
      const auto& p = m.params[i];
      local.set(p.name, p.value ? eval(*p.value, local)
                                : Value::undefined(fmt::format("parameter '{}' was not provided", p.name)));
    }
    return Value(capture(m.body, local));
  }

  // ---- expressions ----
  Value eval(const Expr& e, Scope& scope) {
    budget_.step();
    try {
      const Nesting nesting(depth_);
      return eval_inner(e, scope);
    } catch (const LocatedError&) {
      throw;
    } catch (const RaisedError&) {
      throw;
    } catch (const Error& err) {
      relocate(err, e.line, e.col);
    }
  }

  CallArgs eval_args(const Expr& e, size_t first, Scope& scope) {
    CallArgs a;
    for (size_t i = first; i < e.args.size(); ++i) a.pos.push_back(eval(*e.args[i], scope));
    for (const auto& k : e.kwargs) a.kw.emplace_back(k.name, eval(*k.value, scope));
    return a;
  }

  Value eval_opt(const ast::ExprPtr& e, Scope& scope) { return e ? eval(*e, scope) : Value::none(); }

  bool compare(const std::string& op, const Value& a, const Value& b) {
    // Containers compare element by element: charge for their size.
    budget_.step(static_cast<uint64_t>((a.is_list() ? a.as_list().items.size() : 0) +
                                       (b.is_list() ? b.as_list().items.size() : 0)));
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "<") return less(a, b);
    if (op == ">") return less(b, a);
    if (op == "<=") return less(a, b) || equals(a, b);
    if (op == ">=") return less(b, a) || equals(a, b);
    if (op == "in") return contains(b, a);
    return !contains(b, a);  // notin
  }

  Value eval_inner(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case ExprKind::Const:
        return e.value;
      case ExprKind::Name: {
        const Value* v = scope.find(e.name);
        return v ? *v : Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case ExprKind::List:
      case ExprKind::Tuple: {
        std::vector<Value> items;
        items.reserve(e.args.size());
        for (const auto& a : e.args) items.push_back(eval(*a, scope));
        return Value::list(std::move(items), e.kind == ExprKind::Tuple);
      }
      case ExprKind::Dict: {
        Dict d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = eval(*e.args[i], scope);
          if (!k.is_string())
            throw Error(fmt::format("dict keys must be strings here, got '{}'", type_name(k)));
          d.set(k.as_string(), eval(*e.args[i + 1], scope));
        }
        return Value::dict(std::move(d));
      }
      case ExprKind::Attr:
        return get_attr(eval(*e.args[0], scope), e.name);
      case ExprKind::Item: {
        const Value obj = eval(*e.args[0], scope);
        const Expr& key = *e.args[1];
        if (key.kind == ExprKind::Slice)
          return slice(obj, eval_opt(key.args[0], scope), eval_opt(key.args[1], scope),
                       eval_opt(key.args[2], scope), budget_);
        return get_item(obj, eval(key, scope));
      }
      case ExprKind::Slice:
        throw Error("a slice is only valid inside [...]");
      case ExprKind::Call: {
        const Value callee = eval(*e.args[0], scope);
        CallArgs a = eval_args(e, 1, scope);
        if (callee.is_function()) return callee.as_function().fn(a, budget_);
        if (callee.is_undefined()) throw_undefined(callee);
        throw Error(fmt::format("'{}' object is not callable", type_name(callee)));
      }
      case ExprKind::Filter: {
        if (!e.args[0] && !block_value_) throw Error("filter without an operand");
        const Value operand = e.args[0] ? eval(*e.args[0], scope) : *block_value_;
        CallArgs a = eval_args(e, 1, scope);
        return apply_filter(e.name, operand, a, budget_);
      }
      case ExprKind::Test: {
        const Value operand = eval(*e.args[0], scope);
        CallArgs a = eval_args(e, 1, scope);
        return Value(apply_test(e.name, operand, a, budget_) != e.negated);
      }
      case ExprKind::Not:
        return Value(!eval(*e.args[0], scope).truthy());
      case ExprKind::Neg:
        return negate(eval(*e.args[0], scope));
      case ExprKind::Pos:
        return unary_plus(eval(*e.args[0], scope));
      case ExprKind::Binary:
        return binary_op(e.name, eval(*e.args[0], scope), eval(*e.args[1], scope), budget_);
      case ExprKind::And: {
        Value a = eval(*e.args[0], scope);
        return a.truthy() ? eval(*e.args[1], scope) : a;
      }
      case ExprKind::Or: {
        Value a = eval(*e.args[0], scope);
        return a.truthy() ? a : eval(*e.args[1], scope);
      }
      case ExprKind::Compare: {
        Value left = eval(*e.args[0], scope);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.args[i + 1], scope);
          if (!compare(e.ops[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case ExprKind::Concat: {
        std::string out;
        for (const auto& a : e.args) {
          out += to_str(eval(*a, scope), max_bytes());
          budget_.charge_bytes(out.size());
        }
        return Value(std::move(out));
      }
      case ExprKind::Cond:
        if (eval(*e.args[1], scope).truthy()) return eval(*e.args[0], scope);
        if (e.args[2]) return eval(*e.args[2], scope);
        return Value::undefined(fmt::format(
            "the inline if-expression on line {} evaluated to false and no else section was defined",
            e.line));
    }
    throw Error("internal error: unknown expression kind");
  }

  Budget budget_;
  std::string* out_ = nullptr;
  Scope* template_scope_ = nullptr;
  const Value* block_value_ = nullptr;
  int call_depth_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string render_program(const ast::Program& program, const Value& context, const Limits& limits) {
  EXQ_CHECK(context.is_dict(), "chat template: the render context must be a JSON object");
  return Renderer(limits).run(program, context);
}

}  // namespace exq::chat
