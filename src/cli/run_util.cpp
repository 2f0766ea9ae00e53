#include "cli/run_util.h"

#include <cstdio>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/thread_pool.h"
#include "runtime/model_step.h"
#if EXQ_HAVE_CUDA
#include "runtime/cuda/cuda_llama.h"
#endif

namespace exq::cli {
namespace fs = std::filesystem;

void require_model_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error("model folder does not exist", ErrorContext{.file = dir.string()});
  if (!fs::is_directory(dir, ec)) throw Error("not a model folder", ErrorContext{.file = dir.string()});
  if (!fs::exists(dir / "config.json", ec))
    throw Error("missing config.json in the model folder", ErrorContext{.file = dir.string()});
}

GenerationModel load_generation_model(const fs::path& dir) {
  require_model_dir(dir);
  runtime::GenerationConfig gen = runtime::load_generation_config(dir);
  model::LlamaModel model = model::LlamaModel::load(dir);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(dir / "tokenizer.json");
  tokenizer::TokenizerConfig tc = tokenizer::load_tokenizer_config(dir);
  std::vector<int32_t> eos = runtime::stop_token_ids(gen, model.config(), tok, tc.eos_token);
  return {std::move(model), std::move(tok), std::move(tc), std::move(gen), std::move(eos)};
}

std::string read_text_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error("file does not exist", ErrorContext{.file = path.string()});
  if (fs::is_directory(path, ec)) throw Error("is a folder, expected a file", ErrorContext{.file = path.string()});
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open file", ErrorContext{.file = path.string()});
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error("read failed", ErrorContext{.file = path.string()});
  return ss.str();
}

void apply_threads(int threads) {
  EXQ_CHECK(threads >= 0, "--threads must be >= 0, got {}", threads);
  if (threads > 0) set_num_threads(threads);
}

std::optional<double> parse_number(const std::string& text) {
  try {
    size_t used = 0;
    const double d = std::stod(text, &used);
    if (used == text.size()) return d;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::string group_digits(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

void add_cache_type_flags(CLI::App& cmd, CacheTypeFlags& f) {
  cmd.add_option("--cache-type", f.both,
                 "KV cache: f16 (the default; f32 on the CPU), q8_0 (int8 and an fp16 scale per 32 values: 53 % of "
                 "the f16 cache's memory) or q4 (each 32 values Hadamard-rotated, 4-bit codes with an fp16 step and "
                 "minimum: 31 %)");
  cmd.add_option("--cache-type-k", f.k, "llama.cpp's -ctk: the keys' cache type (the same as the values')");
  cmd.add_option("--cache-type-v", f.v, "llama.cpp's -ctv: the values' cache type (the same as the keys')");
}

void apply_cache_type(model::LlamaModel& model, const CacheTypeFlags& f) {
  const std::string k = f.k.empty() ? f.both : f.k, v = f.v.empty() ? f.both : f.v;
  EXQ_CHECK(k == v,
            "the KV cache takes one type for keys and values: keys {} and values {} differ (give --cache-type, or "
            "the same type to --cache-type-k and --cache-type-v)",
            k, v);
  const std::string& flag = k;
  const auto q = model::kv_quant_from_name(flag);
  // llama.cpp's 4- and 5-bit names store unrotated groups; exq's 4-bit cache is q4.
  EXQ_CHECK(q.has_value() || (!flag.starts_with("q4_") && !flag.starts_with("q5_") && flag != "iq4_nl"),
            "--cache-type {}: exq's 4-bit KV cache is q4 (rotated groups of 32, 4-bit codes with a step and a "
            "minimum); give --cache-type q4", flag);
  EXQ_CHECK(q.has_value(), "--cache-type must be f16, q8_0 or q4, got '{}'", flag);
  model.set_kv_quant(*q);
}

void add_cpu_moe_flags(CLI::App& cmd, CpuMoeFlags& f) {
  cmd.add_flag("--cpu-moe", f.all, "keep the experts of every MoE layer in host memory and run them on the CPU "
                                   "(with --device cuda: for models larger than the GPU's memory)");
  cmd.add_option("--n-cpu-moe", f.layers, "keep the experts of the first N layers in host memory, on the CPU");
}

void apply_cpu_moe_flags(model::LlamaModel& model, const CpuMoeFlags& f) {
  EXQ_CHECK(f.layers >= 0, "--n-cpu-moe must be >= 0, got {}", f.layers);
  const int64_t n = f.all ? model.config().num_hidden_layers : f.layers;
  if (n > 0 && model.config().num_experts == 0)
    std::fprintf(stderr, "note: --cpu-moe / --n-cpu-moe: this model has no experts; nothing changes\n");
  model.set_cpu_moe_layers(n);
}

void add_rope_flags(CLI::App& cmd, RopeFlags& f) {
  cmd.add_option("--rope-freq-base", f.freq_base, "RoPE frequency base (rope_theta); default: the model's");
  cmd.add_option("--rope-scaling", f.scaling,
                 "RoPE scaling: none, linear or yarn; default: the model's rope_scaling");
  cmd.add_option("--rope-scale", f.scale, "RoPE context scaling factor: the context grows by N");
  cmd.add_option("--rope-freq-scale", f.freq_scale, "RoPE frequency scaling factor: the context grows by 1/F");
  cmd.add_option("--yarn-orig-ctx", f.yarn_orig_ctx,
                 "YaRN: the model's trained context; default: its original_max_position_embeddings, "
                 "else max_position_embeddings");
}

void apply_rope_flags(model::LlamaModel& model, const RopeFlags& f) {
  if (!f.any()) return;
  const io::ModelConfig& c = model.config();
  EXQ_CHECK(!(f.scale && f.freq_scale), "give --rope-scale or --rope-freq-scale, not both");
  std::optional<double> factor = f.scale;
  if (f.freq_scale) {
    EXQ_CHECK(std::isfinite(*f.freq_scale) && *f.freq_scale > 0.0, "--rope-freq-scale must be positive, got {}",
              *f.freq_scale);
    factor = 1.0 / *f.freq_scale;
  }
  if (factor)
    EXQ_CHECK(std::isfinite(*factor) && *factor >= 1e-3 && *factor <= 1e6,
              "--rope-scale must be in [0.001, 1e6], got {}", *factor);
  if (f.freq_base)
    EXQ_CHECK(std::isfinite(*f.freq_base) && *f.freq_base > 1.0 && *f.freq_base <= 1e12,
              "--rope-freq-base must be in (1, 1e12], got {}", *f.freq_base);
  if (f.yarn_orig_ctx) EXQ_CHECK(*f.yarn_orig_ctx >= 1, "--yarn-orig-ctx must be at least 1, got {}", *f.yarn_orig_ctx);

  io::RopeScaling rs = c.rope_scaling;
  int64_t max_pos = c.max_position_embeddings;
  std::string type = f.scaling;
  if (type.empty() && factor) type = rs.type == io::RopeScalingType::None ? "linear" : io::rope_scaling_name(rs.type);
  if (type == "none") {
    EXQ_CHECK(!factor && !f.yarn_orig_ctx,
              "--rope-scaling none takes no --rope-scale, --rope-freq-scale or --yarn-orig-ctx");
    rs = io::RopeScaling{};
  } else if (type == "linear") {
    if (rs.type != io::RopeScalingType::Linear) rs = io::RopeScaling{.type = io::RopeScalingType::Linear};
    EXQ_CHECK(factor || c.rope_scaling.type == io::RopeScalingType::Linear,
              "--rope-scaling linear needs --rope-scale (or --rope-freq-scale)");
    if (factor) {
      rs.factor = *factor;
      max_pos = std::max<int64_t>(max_pos, std::llround(static_cast<double>(max_pos) * *factor));
    }
  } else if (type == "yarn") {
    if (rs.type != io::RopeScalingType::Yarn)
      rs = io::RopeScaling{.type = io::RopeScalingType::Yarn, .original_max_position_embeddings = max_pos};
    EXQ_CHECK(factor || c.rope_scaling.type == io::RopeScalingType::Yarn,
              "--rope-scaling yarn needs --rope-scale (or --rope-freq-scale)");
    if (factor) rs.factor = *factor;
    if (f.yarn_orig_ctx) rs.original_max_position_embeddings = *f.yarn_orig_ctx;
  } else if (type == "llama3" && f.scaling.empty()) {  // a scale for a llama3 model: its factor
    rs.factor = *factor;
  } else if (type == "longrope" && f.scaling.empty()) {
    throw Error("--rope-scale / --rope-freq-scale do not apply to the model's longrope scaling (its factors come "
                "from config.json; --rope-scaling yarn or linear replaces it)");
  } else if (!type.empty()) {
    throw Error(fmt::format("--rope-scaling must be none, linear or yarn, got '{}'", type));
  }
  EXQ_CHECK(!f.yarn_orig_ctx || rs.type == io::RopeScalingType::Yarn,
            "--yarn-orig-ctx applies to yarn scaling only (the model's is {}; add --rope-scaling yarn)",
            io::rope_scaling_name(rs.type));
  model.set_rope(f.freq_base.value_or(c.rope_theta), rs, max_pos);
}

void add_lora_flags(CLI::App& cmd, LoraFlags& f) {
  cmd.add_option("--lora", f.lora,
                 "LoRA adapter folder (PEFT: adapter_config.json, adapter_model.safetensors); repeatable");
  cmd.add_option("--lora-scaled", f.lora_scaled, "LoRA adapter folder and a factor on its scale; repeatable")
      ->type_size(2)
      ->type_name("ADAPTER SCALE");
}

std::vector<model::LoraAdapter> load_lora_flags(const LoraFlags& f) {
  std::vector<model::LoraAdapter> adapters;
  for (const std::string& dir : f.lora) adapters.push_back(model::load_lora(dir));
  for (size_t i = 0; i + 1 < f.lora_scaled.size(); i += 2) {
    const std::optional<double> scale = parse_number(f.lora_scaled[i + 1]);
    if (!scale)
      throw Error(
          fmt::format("--lora-scaled {} {}: the scale is not a number", f.lora_scaled[i], f.lora_scaled[i + 1]));
    adapters.push_back(model::load_lora(f.lora_scaled[i], *scale));
  }
  return adapters;
}

void apply_lora_flags(model::LlamaModel& model, const LoraFlags& f) {
  for (const model::LoraAdapter& a : load_lora_flags(f)) model.merge_lora(a);
}

Device resolve_device(const std::string& flag) {
  if (flag == "cpu") return Device::Cpu;
  if (flag != "cuda" && flag != "auto")
    throw Error("--device must be cpu, cuda or auto, got \"" + flag + "\"");
#if EXQ_HAVE_CUDA
  const std::string why = runtime::cuda::cuda_unavailable_reason(0);
  if (why.empty()) return Device::Cuda;
  if (flag == "cuda") throw Error("--device cuda: " + why);
  return Device::Cpu;
#else
  if (flag == "cuda") throw Error("--device cuda: this exq was built without CUDA (use --device cpu)");
  return Device::Cpu;
#endif
}

}  // namespace exq::cli
