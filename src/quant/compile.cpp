#include "quant/compile.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/half.h"
#include "io/hf_config.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/llama_weights.h"

namespace exq::quant {
namespace fs = std::filesystem;

namespace {

Tensor to_f16(const TensorView& v) {
  if (v.dtype() == DType::F16) return Tensor::copy_of(v);
  const Tensor f = to_f32(v);
  Tensor out(DType::F16, v.shape());
  const float* src = f.data<float>();
  uint16_t* dst = out.data<uint16_t>();
  for (int64_t i = 0; i < f.numel(); ++i) dst[i] = float_to_half(src[i]);
  return out;
}

// "model.layers.3.self_attn.q_proj.weight" -> "model.layers.3.self_attn.q_proj".
std::string strip_last(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

}  // namespace

CompileResult compile_model(const CompileInput& in) {
  std::error_code ec;
  fs::create_directories(in.out_dir, ec);
  if (ec || !fs::is_directory(in.out_dir))
    throw Error(fmt::format("cannot create output folder {}: {}", in.out_dir.string(),
                            ec ? ec.message() : "not a folder"));

  std::vector<io::SafetensorsFile> packed;
  std::vector<io::NamedTensor> tensors;
  std::set<std::string> quantized;
  for (const fs::path& p : in.module_files) {
    packed.push_back(io::SafetensorsFile::open(p));
    for (const std::string& name : packed.back().names()) {
      tensors.push_back({name, packed.back().get(name)});
      quantized.insert(strip_last(name));
    }
  }
  const io::SafetensorsModel model = io::SafetensorsModel::open(in.model_dir);
  std::vector<Tensor> converted;
  // phi3's fused qkv_proj / gate_up_proj go out as their quantized parts (exllamav2's names).
  auto quantized_parts = [&](const std::string& key) {
    const std::vector<std::string> parts = model::fused_linear_parts(key);
    return !parts.empty() && std::all_of(parts.begin(), parts.end(), [&](const std::string& p) { return quantized.count(p) > 0; });
  };
  for (const std::string& name : model.names()) {
    if (quantized.count(strip_last(name)) || quantized_parts(strip_last(name)) || name.ends_with("rotary_emb.inv_freq"))
      continue;
    converted.push_back(to_f16(model.get(name)));
    tensors.push_back({name, converted.back()});
  }
  CompileResult result;
  for (const io::NamedTensor& t : tensors) result.tensor_bytes += static_cast<int64_t>(t.tensor.nbytes());

  const bool one_file = in.shard_bytes <= 0 || result.tensor_bytes <= in.shard_bytes;
  result.files = io::write_safetensors(in.out_dir / "output.safetensors", tensors, {{"format", "pt"}},
                                       one_file ? 0 : static_cast<size_t>(in.shard_bytes));
  io::remove_stale_safetensors(in.out_dir / "output.safetensors", result.files);

  const fs::path config_path = in.model_dir / "config.json";
  nlohmann::ordered_json config;
  try {
    config = nlohmann::ordered_json::parse(io::read_file(config_path, "the model config"));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("compile: config.json is not valid JSON: {}", e.what()),
                ErrorContext{.file = config_path.string()});
  }
  // A multimodal gemma3's (mistral3's) language model is written as a gemma3_text (mistral)
  // model of its own (the vision tower is not converted).
  if (const nlohmann::json plain = nlohmann::json::parse(config.dump()); !io::multimodal_wrapper(plain).empty()) {
    const nlohmann::json text = io::text_model_config(plain);
    if (text.is_null())
      throw Error("compile: config field 'text_config': missing", ErrorContext{.file = config_path.string()});
    config = nlohmann::ordered_json::parse(text.dump());
  }
  config["quantization_config"] = {
      {"quant_method", "exl2"},
      {"version", kExqQuantVersion},
      {"bits", in.bits},
      {"head_bits", in.head_bits},
      {"calibration", {{"rows", in.cal_rows}, {"length", in.cal_length}, {"dataset", in.dataset}}}};
  // gemma rounds its embedding scale to the model's dtype: a bf16 model's stays bf16.
  const bool embed_scaled = config.value("model_type", "").starts_with("gemma");
  if (!embed_scaled || (!config.contains("torch_dtype") && !config.contains("dtype"))) config["torch_dtype"] = "float16";
  io::write_file_atomic(in.out_dir / "config.json", config.dump(2) + "\n");

  io::copy_model_side_files(in.model_dir, in.out_dir, {"config.json"});
  return result;
}

}  // namespace exq::quant
