#include "io/gguf.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "core/error.h"

namespace exq::io {
namespace fs = std::filesystem;

namespace {

constexpr int kMaxArrayDepth = 3;  // arrays of arrays of arrays; real files use depth 1
constexpr uint32_t kMaxDims = 4;   // GGML_MAX_DIMS

struct TypeTraits {
  uint32_t id;
  const char* name;
  int64_t block_size;
  int64_t type_size;
};
constexpr std::array<TypeTraits, 34> kTypes = {{
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},      {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},    {40, "NVFP4", 64, 36},
    {41, "Q1_0", 128, 18},
}};

const TypeTraits* find_type(uint32_t id) {
  for (const auto& t : kTypes)
    if (t.id == id) return &t;
  return nullptr;
}

// Smallest encoding of one value of a type, to bound counts before allocating.
size_t min_value_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::Uint8:
    case GgufValueType::Int8:
    case GgufValueType::Bool:
      return 1;
    case GgufValueType::Uint16:
    case GgufValueType::Int16:
      return 2;
    case GgufValueType::Uint32:
    case GgufValueType::Int32:
    case GgufValueType::Float32:
      return 4;
    case GgufValueType::Uint64:
    case GgufValueType::Int64:
    case GgufValueType::Float64:
      return 8;
    case GgufValueType::String:
      return 8;
    case GgufValueType::Array:
      return 12;
  }
  return 1;
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  static constexpr std::array<std::string_view, 13> kNames = {
      "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
      "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < kNames.size() ? kNames[i] : "invalid";
}

std::string ggml_type_name(uint32_t type) {
  const TypeTraits* t = find_type(type);
  return t ? std::string(t->name) : fmt::format("type {}", type);
}

bool ggml_type_block(uint32_t type, int64_t* block_size, int64_t* type_size) {
  const TypeTraits* t = find_type(type);
  if (!t) return false;
  *block_size = t->block_size;
  *type_size = t->type_size;
  return true;
}

// ---------------------------------------------------------------------------------------
// GgufValue

bool GgufValue::is_integer() const {
  switch (type_) {
    case GgufValueType::Uint8:
    case GgufValueType::Int8:
    case GgufValueType::Uint16:
    case GgufValueType::Int16:
    case GgufValueType::Uint32:
    case GgufValueType::Int32:
    case GgufValueType::Uint64:
    case GgufValueType::Int64:
      return true;
    default:
      return false;
  }
}

static bool is_unsigned_type(GgufValueType t) {
  return t == GgufValueType::Uint8 || t == GgufValueType::Uint16 || t == GgufValueType::Uint32 ||
         t == GgufValueType::Uint64 || t == GgufValueType::Bool;
}

int64_t GgufValue::as_int() const {
  EXQ_CHECK(is_integer(), "expected an integer, got {}", gguf_value_type_name(type_));
  if (is_unsigned_type(type_)) {
    EXQ_CHECK(u_ <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
              "integer {} out of range", u_);
    return static_cast<int64_t>(u_);
  }
  return i_;
}

double GgufValue::as_double() const {
  if (is_float()) return f_;
  if (is_integer())
    return is_unsigned_type(type_) ? static_cast<double>(u_) : static_cast<double>(i_);
  throw Error(fmt::format("expected a number, got {}", gguf_value_type_name(type_)));
}

bool GgufValue::as_bool() const {
  EXQ_CHECK(type_ == GgufValueType::Bool, "expected a bool, got {}", gguf_value_type_name(type_));
  return u_ != 0;
}

const std::string& GgufValue::as_string() const {
  EXQ_CHECK(is_string(), "expected a string, got {}", gguf_value_type_name(type_));
  return s_;
}

const GgufValue& GgufValue::operator[](size_t i) const {
  EXQ_CHECK(is_array() && i < items_.size(), "array index {} out of range ({} items)", i,
            items_.size());
  return items_[i];
}

std::vector<std::string> GgufValue::as_strings() const {
  EXQ_CHECK(is_array() && array_type_ == GgufValueType::String,
            "expected an array of strings, got {}", describe());
  std::vector<std::string> out;
  out.reserve(items_.size());
  for (const GgufValue& v : items_) out.push_back(v.s_);
  return out;
}

std::vector<int64_t> GgufValue::as_ints() const {
  EXQ_CHECK(is_array(), "expected an array of integers, got {}", describe());
  std::vector<int64_t> out;
  out.reserve(items_.size());
  for (const GgufValue& v : items_) out.push_back(v.as_int());
  return out;
}

std::vector<double> GgufValue::as_doubles() const {
  EXQ_CHECK(is_array(), "expected an array of numbers, got {}", describe());
  std::vector<double> out;
  out.reserve(items_.size());
  for (const GgufValue& v : items_) out.push_back(v.as_double());
  return out;
}

std::string GgufValue::describe() const {
  switch (type_) {
    case GgufValueType::Array:
      return fmt::format("[{} x {}]", gguf_value_type_name(array_type_), items_.size());
    case GgufValueType::String:
      return s_.size() <= 60 ? fmt::format("\"{}\"", s_)
                             : fmt::format("\"{}...\" ({} bytes)", s_.substr(0, 57), s_.size());
    case GgufValueType::Bool:
      return u_ ? "true" : "false";
    case GgufValueType::Float32:
    case GgufValueType::Float64:
      return fmt::format("{}", f_);
    default:
      return is_unsigned_type(type_) ? fmt::format("{}", u_) : fmt::format("{}", i_);
  }
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------
// Parser: a cursor that checks every read against the bytes left.

class GgufParser {
 public:
  explicit GgufParser(const MappedFile& f) : p_(f.data()), size_(f.size()), path_(f.path()) {}

  static GgufFile parse(MappedFile file);

 private:
  [[noreturn]] void fail(const std::string& msg, const std::string& tensor = {}) const {
    throw Error(msg, ErrorContext{.file = path_.string(), .tensor = tensor});
  }
  size_t left() const { return size_ - pos_; }
  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      fail(fmt::format("{}: needs {} bytes at offset {}, only {} left", what, n, pos_, left()));
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  GgufValueType read_type(const std::string& what) {
    const uint32_t t = read<uint32_t>(what + " type");
    if (t > static_cast<uint32_t>(GgufValueType::Float64))
      fail(fmt::format("{}: invalid value type {}", what, t));
    return static_cast<GgufValueType>(t);
  }
  GgufValue read_value(GgufValueType type, const std::string& what, int depth);

  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  fs::path path_;
};

GgufValue GgufParser::read_value(GgufValueType type, const std::string& what, int depth) {
  GgufValue v;
  v.type_ = type;
  switch (type) {
    case GgufValueType::Uint8:
      v.u_ = read<uint8_t>(what);
      break;
    case GgufValueType::Int8:
      v.i_ = read<int8_t>(what);
      break;
    case GgufValueType::Uint16:
      v.u_ = read<uint16_t>(what);
      break;
    case GgufValueType::Int16:
      v.i_ = read<int16_t>(what);
      break;
    case GgufValueType::Uint32:
      v.u_ = read<uint32_t>(what);
      break;
    case GgufValueType::Int32:
      v.i_ = read<int32_t>(what);
      break;
    case GgufValueType::Uint64:
      v.u_ = read<uint64_t>(what);
      break;
    case GgufValueType::Int64:
      v.i_ = read<int64_t>(what);
      break;
    case GgufValueType::Float32:
      v.f_ = read<float>(what);
      break;
    case GgufValueType::Float64:
      v.f_ = read<double>(what);
      break;
    case GgufValueType::Bool: {
      const uint8_t b = read<uint8_t>(what);
      if (b > 1) fail(fmt::format("{}: bool byte is {}, not 0 or 1", what, b));
      v.u_ = b;
      break;
    }
    case GgufValueType::String:
      v.s_ = read_string(what);
      break;
    case GgufValueType::Array: {
      if (depth >= kMaxArrayDepth)
        fail(fmt::format("{}: arrays nested deeper than {}", what, kMaxArrayDepth));
      v.array_type_ = read_type(what + " element");
      const uint64_t n = read<uint64_t>(what + " count");
      const size_t min = min_value_size(v.array_type_);
      if (n > left() / min)
        fail(fmt::format("{}: array claims {} {} items but only {} bytes are left", what, n,
                         gguf_value_type_name(v.array_type_), left()));
      v.items_.reserve(static_cast<size_t>(n));
      for (uint64_t i = 0; i < n; ++i)
        v.items_.push_back(read_value(v.array_type_, what, depth + 1));
      break;
    }
  }
  return v;
}

GgufFile GgufParser::parse(MappedFile file) {
  GgufParser r(file);
  GgufFile g;
  const uint32_t magic = r.read<uint32_t>("magic");
  if (std::memcmp(&magic, "GGUF", 4) != 0) r.fail("not a GGUF file (bad magic)");
  g.version_ = r.read<uint32_t>("version");
  if (g.version_ != 2 && g.version_ != 3)
    r.fail(fmt::format("unsupported GGUF version {} (exq reads versions 2 and 3)", g.version_));
  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  // Each key/value takes at least 13 bytes, each tensor info at least 24.
  if (n_kv > r.left() / 13)
    r.fail(fmt::format("metadata count {} exceeds what {} bytes can hold", n_kv, r.left()));
  if (n_tensors > r.left() / 24)
    r.fail(fmt::format("tensor count {} exceeds what {} bytes can hold", n_tensors, r.left()));

  g.kv_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.read_string(fmt::format("metadata key #{}", i));
    const std::string what = fmt::format("metadata '{}'", key);
    const GgufValueType t = r.read_type(what);
    GgufValue v = r.read_value(t, what, 0);
    if (!g.kv_index_.emplace(key, g.kv_.size()).second) r.fail(fmt::format("duplicate {}", what));
    g.kv_.emplace_back(std::move(key), std::move(v));
  }
  if (const GgufValue* a = g.find("general.alignment")) {
    const int64_t al = a->is_integer() ? a->as_int() : 0;
    if (al <= 0 || al > (1 << 30) || (al & (al - 1)) != 0)
      r.fail(fmt::format("general.alignment {} is not a power of two", a->describe()));
    g.alignment_ = static_cast<size_t>(al);
  }

  g.tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.read_string(fmt::format("tensor name #{}", i));
    const uint32_t n_dims = r.read<uint32_t>("tensor dimension count");
    if (n_dims > kMaxDims)
      r.fail(fmt::format("{} dimensions (at most {})", n_dims, kMaxDims), t.name);
    int64_t bound = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = r.read<uint64_t>("tensor dimension");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(bound, std::max<int64_t>(static_cast<int64_t>(dim), 1), &bound))
        r.fail(fmt::format("dimension {} overflows", dim), t.name);
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    t.type = r.read<uint32_t>("tensor type");
    t.offset = r.read<uint64_t>("tensor offset");
    int64_t block = 0, type_size = 0;
    if (!ggml_type_block(t.type, &block, &type_size))
      r.fail(fmt::format("unknown tensor type id {}", t.type), t.name);
    const int64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % block != 0)
      r.fail(fmt::format("first dimension {} is not a multiple of the {} block size {}", row,
                         ggml_type_name(t.type), block),
             t.name);
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(t.numel() / block),
                               static_cast<uint64_t>(type_size), &nbytes))
      r.fail(fmt::format("size of {} elements overflows", t.numel()), t.name);
    t.nbytes = static_cast<size_t>(nbytes);
    if (!g.tensor_index_.emplace(t.name, g.tensors_.size()).second)
      r.fail("duplicate tensor name", t.name);
    g.tensors_.push_back(std::move(t));
  }

  const size_t data_offset = (r.pos_ + g.alignment_ - 1) / g.alignment_ * g.alignment_;
  if (data_offset > r.size_ && !g.tensors_.empty())
    r.fail(fmt::format("data section starts at {} past the end of the file ({} bytes)", data_offset,
                       r.size_));
  g.data_offset_ = std::min(data_offset, r.size_);
  const size_t data_size = r.size_ - g.data_offset_;
  std::vector<const GgufTensorInfo*> by_offset;
  for (GgufTensorInfo& t : g.tensors_) {
    if (t.offset % g.alignment_ != 0)
      r.fail(fmt::format("offset {} is not a multiple of the alignment {}", t.offset, g.alignment_),
             t.name);
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      r.fail(fmt::format("{} bytes at offset {} run past the end of the {} byte data section",
                         t.nbytes, t.offset, data_size),
             t.name);
    t.data = file.data() + g.data_offset_ + t.offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) {
              return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
            });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->nbytes)
      r.fail(fmt::format("data overlaps tensor '{}'", by_offset[i - 1]->name), by_offset[i]->name);

  g.file_ = std::move(file);
  return g;
}

// ---------------------------------------------------------------------------------------
// GgufFile

GgufFile GgufFile::open(const fs::path& path) { return GgufParser::parse(MappedFile::open(path)); }
GgufFile GgufFile::parse(MappedFile file) { return GgufParser::parse(std::move(file)); }

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufValue& GgufFile::at(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v)
    throw Error(fmt::format("missing metadata key '{}'", key),
                ErrorContext{.file = path().string()});
  return *v;
}

namespace {
template <typename Fn>
auto typed(const GgufFile& g, const std::string& key, Fn&& fn) {
  try {
    return fn(g.at(key));
  } catch (const Error& e) {
    if (!e.context().file.empty()) throw;
    throw Error(fmt::format("metadata '{}': {}", key, e.message()),
                ErrorContext{.file = g.path().string()});
  }
}
}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_int(); });
}
int64_t GgufFile::get_int_or(const std::string& key, int64_t fallback) const {
  return find(key) ? get_int(key) : fallback;
}
double GgufFile::get_double(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_double(); });
}
std::string GgufFile::get_string(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_string(); });
}
std::string GgufFile::get_string_or(const std::string& key, const std::string& fallback) const {
  return find(key) ? get_string(key) : fallback;
}
bool GgufFile::get_bool_or(const std::string& key, bool fallback) const {
  return find(key) ? typed(*this, key, [](const GgufValue& v) { return v.as_bool(); }) : fallback;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) throw Error("no such tensor", ErrorContext{.file = path().string(), .tensor = name});
  return *t;
}

}  // namespace exq::io
