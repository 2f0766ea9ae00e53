#include "cli/run_util.h"

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

std::string group_digits(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

void apply_cache_type(model::LlamaModel& model, const std::string& flag) {
  const auto q = model::kv_quant_from_name(flag);
  EXQ_CHECK(q.has_value(), "--cache-type must be f16 or q8_0, got '{}'", flag);
  model.set_kv_quant(*q);
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
