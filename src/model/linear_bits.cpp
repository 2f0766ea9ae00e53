#include "model/linear_bits.h"

#include <fmt/format.h>

#include "core/error.h"
#include "io/exl2.h"
#include "model/llama_weights.h"

namespace exq::model {
namespace {

void add(Exl2Bits& sum, const Exl2Bits& b) {
  sum.weights += b.weights;
  sum.total_bits += b.total_bits;
  sum.code_bits += b.code_bits;
}

LinearBits one_linear(const io::SafetensorsModel& files, const std::filesystem::path& dir,
                      const std::string& key, const std::string& name, int64_t out, int64_t in) {
  LinearBits r;
  r.name = name;
  if (files.contains(key + ".qweight"))
    throw Error("GPTQ format is not supported (exq runs EXL2 and unquantized layers)",
                ErrorContext{.file = files.file_of(key + ".qweight").string(), .tensor = key + ".qweight"});
  if (io::has_exl2(files, key)) {
    const std::string file = files.file_of(key + ".q_weight").string();
    for (const char* suffix : io::kExl2Suffixes)
      if (!files.contains(key + suffix))
        throw Error(fmt::format("missing tensor of the EXL2 layer {} (its q_weight is in this file)", key),
                    ErrorContext{.file = file, .tensor = key + suffix});
    try {
      const io::Exl2Tensors t = io::exl2_tensors(files, key);
      const auto groups = io::validate_exl2(t, in, out, key);
      r.format = "exl2";
      r.groups = static_cast<int64_t>(groups.size());
      r.bits = exl2_bits(groups, in, out, !t.bias.empty());
    } catch (const Error& e) {
      throw e.with_file(file);
    }
    return r;
  }
  const std::string wname = key + ".weight";
  if (!files.contains(wname))
    throw Error("missing tensor (required by config.json)", ErrorContext{.file = dir.string(), .tensor = wname});
  const TensorView w = files.get(wname);
  if (w.shape() != Shape{out, in})
    throw Error(fmt::format("shape {} does not match config.json (expected {})", shape_str(w.shape()),
                            shape_str({out, in})),
                ErrorContext{.file = files.file_of(wname).string(), .tensor = wname});
  r.format = std::string(dtype_name(w.dtype()));
  r.bits.weights = in * out;
  const double dbits = 8.0 * static_cast<double>(dtype_size(w.dtype()));
  r.bits.code_bits = dbits * static_cast<double>(in * out);
  r.bits.total_bits = r.bits.code_bits;
  if (files.contains(key + ".bias"))
    r.bits.total_bits += 8.0 * static_cast<double>(files.get(key + ".bias").nbytes());
  return r;
}

}  // namespace

ModelBits linear_bits(const io::ModelConfig& c, const io::SafetensorsModel& files,
                      const std::filesystem::path& dir) {
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const struct {
    const char* name;
    int64_t out, in;
  } linears[] = {{"self_attn.q_proj", c.q_dim(), h}, {"self_attn.k_proj", c.kv_dim(), h},
                 {"self_attn.v_proj", c.kv_dim(), h}, {"self_attn.o_proj", h, c.q_dim()},
                 {"mlp.gate_proj", inter, h},         {"mlp.up_proj", inter, h},
                 {"mlp.down_proj", h, inter}};
  ModelBits m;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerBits layer;
    for (const auto& lin : linears) {
      if (c.moe_layer(l) && std::string_view(lin.name).starts_with("mlp.")) continue;
      layer.linears.push_back(
          one_linear(files, dir, fmt::format("model.layers.{}.{}", l, lin.name), lin.name, lin.out, lin.in));
      add(layer.total, layer.linears.back().bits);
    }
    if (c.moe_layer(l)) {
      // One entry a role, summed over the experts; exl2 when every expert is.
      const MoeNames mn = moe_names(c);
      const int64_t ei = c.expert_intermediate;
      const struct {
        const char* name;
        const char* part;
        int64_t out, in;
      } roles[] = {{"experts.gate", mn.gate, ei, h}, {"experts.up", mn.up, ei, h}, {"experts.down", mn.down, h, ei}};
      for (const auto& role : roles) {
        LinearBits sum;
        sum.name = role.name;
        for (int64_t e = 0; e < c.num_experts; ++e) {
          const LinearBits one = one_linear(files, dir, expert_key(c, l, e, role.part), role.name, role.out, role.in);
          sum.format = e == 0 || sum.format == one.format ? one.format : "mixed";
          sum.groups += one.groups;
          add(sum.bits, one.bits);
        }
        add(layer.total, sum.bits);
        layer.linears.push_back(std::move(sum));
      }
    }
    add(m.decoder, layer.total);
    m.layers.push_back(std::move(layer));
  }
  // Same rule as load_llama_weights: a quantized head is used even when the config ties it.
  const bool stored = files.contains("lm_head.q_weight") || files.contains("lm_head.qweight") ||
                      (!c.tie_word_embeddings && files.contains("lm_head.weight"));
  if (stored) {
    m.head = one_linear(files, dir, "lm_head", "lm_head", c.vocab_size, h);
  } else {
    m.head.name = "lm_head";
    m.head.format = "tied";
  }
  return m;
}

}  // namespace exq::model
