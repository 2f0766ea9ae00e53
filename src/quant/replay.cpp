#include "quant/replay.h"

#include <fmt/format.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "core/error.h"
#include "io/exl2.h"
#include "io/safetensors.h"
#include "model/llama_weights.h"
#include "quant/quantize.h"

namespace exq::quant {
namespace fs = std::filesystem;

namespace {

memory::HostBuffer load_snapshot(const Job& job, Pass pass, int64_t index,
                                 const io::ModelConfig& config, memory::HostStore& store) {
  const fs::path p = job.states_path(pass, index);
  if (!fs::exists(p))
    throw Error(fmt::format("state snapshot of module {} is missing; start over with -nr", index),
                ErrorContext{.file = p.string()});
  const io::SafetensorsFile f = io::SafetensorsFile::open(p);
  const TensorView s = f.get("states");
  EXQ_CHECK(s.dtype() == DType::F32 && s.rank() == 3 && s.dim(2) == config.hidden_size,
            "{}: states are {} {}, expected F32 [rows, T, {}]; start over with -nr", p.string(),
            dtype_name(s.dtype()), shape_str(s.shape()), config.hidden_size);
  return store.copy_of(s);
}

// A module's linears dequantized from its committed EXL2 tensors, F32 [out, in]: exactly the
// weights the quantization pass ran it with (GptqResult::weight == io::dequantize_exl2).
struct DequantizedModule {
  io::SafetensorsFile file;
  std::vector<Tensor> weights;  // in table column order
};

// linears: name (or, with full_keys, the tensor key) -> {in, out}.
DequantizedModule dequantize_module(const Job& job, const std::string& key,
                                    const std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>>& linears,
                                    bool full_keys = false) {
  const fs::path p = job.module_tensors_path(key);
  if (!fs::exists(p))
    throw Error(fmt::format("quantized tensors of committed module {} are missing; start over "
                            "with -nr", key),
                ErrorContext{.file = p.string()});
  DequantizedModule m{io::SafetensorsFile::open(p), {}};
  for (const auto& [name, in_out] : linears) {
    const std::string k = full_keys ? name : key + "." + name;
    try {
      m.weights.push_back(io::dequantize_exl2(io::exl2_tensors(m.file, k), in_out.first,
                                              in_out.second, k, DType::F32));
    } catch (const Error& e) {
      throw e.with_file(p.string());
    }
  }
  return m;
}

}  // namespace

ReplayResult rebuild_states(const Job& job, Pass pass, const std::vector<ModuleStep>& steps,
                            const io::ModelConfig& config, memory::HostStore& store,
                            Engine& engine, const std::function<const LayerF32&(int64_t)>& layer,
                            const std::function<memory::HostBuffer()>& initial) {
  const auto t0 = std::chrono::steady_clock::now();
  ReplayResult r;
  r.from = job.states_module(pass);
  const int64_t to = job.last_module(pass);
  r.states = r.from >= 0 ? load_snapshot(job, pass, r.from, config, store) : initial();
  const int64_t h = config.hidden_size, q = config.q_dim(), kv = config.kv_dim(),
                inter = config.intermediate_size;
  for (const ModuleStep& step : steps) {
    if (step.index <= r.from || step.index > to) continue;
    if (!changes_states(step.kind)) continue;
    const LayerF32& l = layer(step.layer);
    memory::HostBuffer y = store.allocate(DType::F32, r.states.shape());
    if (step.kind == ModuleKind::kAttention) {
      AttnWeights w = attn_weights(l);
      std::optional<DequantizedModule> dq;
      if (pass == Pass::kQuantize) {
        dq = dequantize_module(job, step.key, {{"q_proj", {h, q}}, {"k_proj", {h, kv}},
                                               {"v_proj", {h, kv}}, {"o_proj", {q, h}}});
        w.q = dq->weights[0];
        w.k = dq->weights[1];
        w.v = dq->weights[2];
        w.o = dq->weights[3];
      }
      engine.forward_attention(w, r.states, y);
    } else if (step.kind == ModuleKind::kMoe) {
      MoeWeights w = moe_weights(l);
      std::optional<DequantizedModule> dq;
      if (pass == Pass::kQuantize) {
        const model::MoeNames mn = model::moe_names(config);
        const int64_t ei = config.expert_intermediate;
        std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> linears;
        for (int64_t e = 0; e < config.num_experts; ++e) {
          linears.push_back({model::expert_key(config, step.layer, e, mn.gate), {h, ei}});
          linears.push_back({model::expert_key(config, step.layer, e, mn.up), {h, ei}});
          linears.push_back({model::expert_key(config, step.layer, e, mn.down), {ei, h}});
        }
        dq = dequantize_module(job, step.key, linears, /*full_keys=*/true);
        for (size_t e = 0; e < w.experts.size(); ++e)
          w.experts[e] = {dq->weights[3 * e], dq->weights[3 * e + 1], dq->weights[3 * e + 2]};
      }
      engine.forward_moe(w, r.states, y);
    } else {
      MlpWeights w = mlp_weights(l);
      std::optional<DequantizedModule> dq;
      if (pass == Pass::kQuantize) {
        dq = dequantize_module(job, step.key, {{"gate_proj", {h, inter}}, {"up_proj", {h, inter}},
                                               {"down_proj", {inter, h}}});
        w.gate = dq->weights[0];
        w.up = dq->weights[1];
        w.down = dq->weights[2];
      }
      engine.forward_mlp(w, r.states, y);
    }
    check_states(y, step.key);  // clamps the same rare Inf values the original run clamped
    r.states = std::move(y);
    ++r.modules;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace exq::quant
