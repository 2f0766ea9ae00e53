// Weights of a Llama-family decoder (llama / mistral / qwen2 / qwen3 / phi3) read from a Hugging Face
// safetensors folder, with HF tensor names and shapes checked against the config. Linear
// weights stay zero-copy views into the mmapped files (in their file dtype); a layer stored as
// EXL2 (KEY.q_weight ..., any layer and the head) becomes an Exl2Linear on its packed tensors.
// Norms are copied to float32. Every tensor is checked for NaN/Inf at load. phi3's fused
// qkv_proj / gate_up_proj become views of their rows as q, k, v and gate, up.
#pragma once

#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/linear.h"

namespace exq::model {

// One expert of a mixture-of-experts MLP: a SwiGLU MLP of the config's expert_intermediate rows.
struct ExpertWeights {
  std::unique_ptr<Linear> gate;   // mixtral experts.E.w1, qwen3_moe experts.E.gate_proj [expert_inter, hidden]
  std::unique_ptr<Linear> up;     // w3 / up_proj [expert_inter, hidden]
  std::unique_ptr<Linear> down;   // w2 / down_proj [hidden, expert_inter]
};

struct LayerWeights {
  Tensor attn_norm;               // input_layernorm [hidden] F32
  std::unique_ptr<Linear> q;      // self_attn.q_proj [heads * head_dim, hidden] (+ bias)
  std::unique_ptr<Linear> k;      // self_attn.k_proj [kv_heads * head_dim, hidden] (+ bias)
  std::unique_ptr<Linear> v;      // self_attn.v_proj [kv_heads * head_dim, hidden] (+ bias)
  std::unique_ptr<Linear> o;      // self_attn.o_proj [hidden, heads * head_dim]
  Tensor q_norm, k_norm;          // qwen3: self_attn.q_norm / k_norm [head_dim] F32, else empty
  Tensor ffn_norm;                // post_attention_layernorm [hidden] F32 (gemma2 / 3: pre_feedforward_layernorm)
  // gemma2 / gemma3 (sandwich_norms): post_attention_layernorm and post_feedforward_layernorm,
  // applied to the attention and MLP outputs before the residual add; else empty.
  Tensor post_attn_norm, post_ffn_norm;
  std::unique_ptr<Linear> gate;   // mlp.gate_proj [intermediate, hidden]
  std::unique_ptr<Linear> up;     // mlp.up_proj [intermediate, hidden]
  std::unique_ptr<Linear> down;   // mlp.down_proj [hidden, intermediate]
  // Mixture-of-experts layers (config.moe_layer): gate, up and down are null, and the router
  // (block_sparse_moe.gate / mlp.gate [num_experts, hidden], always dense) picks among experts.
  std::unique_ptr<Linear> router;
  std::vector<ExpertWeights> experts;
};

// The tensor names of a mixture-of-experts layer ("model.layers.N." + block + ...): mixtral
// block_sparse_moe, experts w1 / w3 / w2; qwen3_moe mlp, experts gate_proj / up_proj / down_proj.
// The router is block + ".gate", expert E's linears block + ".experts.E." + gate / up / down.
struct MoeNames {
  const char* block;
  const char* gate;
  const char* up;
  const char* down;
};
MoeNames moe_names(const io::ModelConfig& config);
// "model.layers.3.block_sparse_moe.gate"
std::string router_key(const io::ModelConfig& config, int64_t layer);
// "model.layers.3.block_sparse_moe.experts.5." + part (part: MoeNames' gate, up or down)
std::string expert_key(const io::ModelConfig& config, int64_t layer, int64_t expert, const char* part);

// phi3's fused projections within a layer ("model.layers.N."): the fused name and, in row
// order, the layers it holds (the names EXL2 files and the other model types use).
struct FusedLinear {
  const char* fused;
  std::vector<const char*> parts;
};
extern const FusedLinear kFusedLinears[2];  // qkv_proj, gate_up_proj
// "model.layers.3.self_attn.qkv_proj" -> its parts' full names ("model.layers.3.self_attn.q_proj",
// ...); empty for any other name.
std::vector<std::string> fused_linear_parts(const std::string& key);

// A layer's RMSNorm tensors ("model.layers.N." + name + ".weight") for the config: the norm
// before attention, after it (sandwich_norms, else null), before the MLP and after it (or null).
struct NormNames {
  const char* attn;
  const char* post_attn;
  const char* ffn;
  const char* post_ffn;
};
NormNames norm_names(const io::ModelConfig& config);
// An RMSNorm weight as the model multiplies by it, F32: w, or 1 + w for gemma (norm_plus_one).
Tensor norm_weight(const io::ModelConfig& config, const TensorView& stored);

// gemma (embed_scale): sqrt(hidden_size) rounded to the model's dtype (config.json's torch_dtype,
// else the embedding table's), as transformers multiplies the looked-up rows; else the config's
// embedding_multiplier (granite; 1 for the rest).
float embedding_scale(const io::ModelConfig& config, DType table);

struct LlamaWeights {
  io::SafetensorsModel files;     // owns the mappings every view below points into
  TensorView embed;               // model.embed_tokens [vocab, hidden], file dtype
  std::vector<LayerWeights> layers;
  Tensor final_norm;              // model.norm [hidden] F32
  std::unique_ptr<Linear> head;   // lm_head [vocab, hidden], or embed_tokens when tied
  bool head_tied = false;
  std::deque<Tensor> owned;       // weights made at load (LoRA merges) that views above point into
};

// Throws exq::Error naming the folder (or file) and tensor for a missing tensor, a wrong shape
// or dtype, a NaN/Inf value, an invalid EXL2 layer, a GPTQ layer (KEY.qweight) or a
// quantization_config.quant_method other than "exl2".
LlamaWeights load_llama_weights(const io::ModelConfig& config, const std::filesystem::path& dir);

}  // namespace exq::model
