// exq's GPTQ on SmolLM2 layer 0 (q/k/v, whose inputs are just the normed embeddings) against
// what exllamav2 produced with the same options (fixtures/exl2): output error on held-out text.
#include <cblas.h>
#include <gtest/gtest.h>

#include <cmath>

#include "core/half.h"
#include "io/exl2.h"
#include "quant/gptq.h"
#include "test_support.h"

namespace exq::quant {
namespace {

// Layer-0 attention inputs: RMSNorm(embedding[ids]) * input_layernorm.weight, [T, 576].
std::vector<float> layer0_inputs(const io::SafetensorsFile& model, const TensorView& ids) {
  const TensorView emb = model.get("model.embed_tokens.weight");
  const TensorView norm = model.get("model.layers.0.input_layernorm.weight");
  const int64_t d = emb.dim(1), t = ids.numel();
  std::vector<float> x(static_cast<size_t>(t * d));
  for (int64_t i = 0; i < t; ++i) {
    const uint16_t* e = emb.data<uint16_t>() + ids.data<int32_t>()[i] * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += double(half_to_float(e[j])) * half_to_float(e[j]);
    const float r = 1.0f / std::sqrt(static_cast<float>(ss / d) + 1e-5f);
    for (int64_t j = 0; j < d; ++j)
      x[i * d + j] = half_to_float(e[j]) * r * half_to_float(norm.data<uint16_t>()[j]);
  }
  return x;
}

// ||X (W - Wq)^T||_F / ||X W^T||_F, W and Wq [out, in] f32.
double output_error(const std::vector<float>& x, int64_t t, const std::vector<float>& w,
                    const std::vector<float>& wq, int64_t out, int64_t in) {
  std::vector<float> y(t * out), yq(t * out);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(t), int(out), int(in), 1.0f, x.data(),
              int(in), w.data(), int(in), 0.0f, y.data(), int(out));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(t), int(out), int(in), 1.0f, x.data(),
              int(in), wq.data(), int(in), 0.0f, yq.data(), int(out));
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += double(y[i] - yq[i]) * (y[i] - yq[i]);
    den += double(y[i]) * y[i];
  }
  return std::sqrt(num / den);
}

TEST(GptqSmolLM2, Layer0MatchesExllamav2Quality) {
  EXQ_REQUIRE_MODEL();
  const auto model = io::SafetensorsFile::open(test::test_model() / "model.safetensors");
  const auto ids = io::SafetensorsFile::open(test::shared_dir() / "fixtures" / "smollm2" /
                                             "ppl_ids.safetensors");
  const std::vector<float> calib = layer0_inputs(model, ids.get("wiki"));   // 8192 tokens
  const std::vector<float> held_out = layer0_inputs(model, ids.get("c4"));  // 4096 tokens
  const int64_t in = 576, t_cal = 8192, t_eval = 4096;
  HessianAccumulator acc(in);
  for (int64_t b = 0; b < t_cal; b += 512) acc.add_batch(&calib[b * in], 512);
  const PreparedHessian h = prepare_hessian(acc.hessian(), in);

  struct Case {
    const char* bpw;
    const char* linear;
    int64_t out;
    const char* option;  // what exllamav2 chose for this layer (see exl2_layout_test)
  };
  const Case cases[] = {{"4.0", "q_proj", 576, "0.1:4b_128g/0.9:3b_128g s4"},
                        {"4.0", "k_proj", 192, "0.1:4b_128g/0.9:3b_128g s4"},
                        {"4.0", "v_proj", 192, "0.1:4b_64g/0.9:3b_64g s4"},
                        {"2.5", "q_proj", 576, "0.1:3b_64g/0.9:2b_64g s4"},
                        {"2.5", "k_proj", 192, "0.1:3b_64g/0.9:2b_64g s4"},
                        {"2.5", "v_proj", 192, "0.25:3b_64g/0.75:2b_64g s4"}};
  for (const Case& c : cases) {
    const std::string key = std::string("model.layers.0.self_attn.") + c.linear;
    const Tensor w = to_f32(model.get(key + ".weight"));
    const std::vector<float> wv(w.data<float>(), w.data<float>() + w.numel());
    const auto fx =
        io::SafetensorsFile::open(test::shared_dir() / "fixtures" / "exl2" /
                                  fmt::format("smollm2_layer0_{}bpw.safetensors", c.bpw));
    const Tensor ref = io::dequantize_exl2(io::exl2_tensors(fx, key), in, c.out, key, DType::F32);
    const std::vector<float> rv(ref.data<float>(), ref.data<float>() + ref.numel());

    const GptqResult r = gptq_quantize(wv.data(), c.out, in, h, parse_option(c.option));
    const double e_exq = output_error(held_out, t_eval, wv, r.weight, c.out, in);
    const double e_ref = output_error(held_out, t_eval, wv, rv, c.out, in);
    const double e_rtn = output_error(
        held_out, t_eval, wv,
        gptq_quantize(wv.data(), c.out, in, identity_hessian(in), parse_option(c.option)).weight,
        c.out, in);
    // In-sample (the calibration text) for contrast: exq saw it, exllamav2 did not.
    const double i_exq = output_error(calib, t_cal, wv, r.weight, c.out, in);
    const double i_ref = output_error(calib, t_cal, wv, rv, c.out, in);
    std::printf(
        "[%s bpw] %s %-28s c4 output error: exq %.4f  exllamav2 %.4f  RTN %.4f"
        "  (wiki, calibration: exq %.4f  exllamav2 %.4f)\n",
        c.bpw, c.linear, c.option, e_exq, e_ref, e_rtn, i_exq, i_ref);
    EXPECT_LT(e_exq, 1.1 * e_ref) << key;
    EXPECT_LT(e_exq, e_rtn) << key;
  }
}

}  // namespace
}  // namespace exq::quant
