#include "quant/pipeline.h"

#include <fmt/format.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <numeric>
#include <optional>
#include <utility>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/llama_weights.h"
#include "quant/calibration_input.h"
#include "quant/compile.h"
#include "quant/measure.h"
#include "quant/measurement.h"
#include "quant/module_forward.h"
#include "quant/optimize.h"
#include "quant/progress_bar.h"
#include "quant/quantize.h"
#include "quant/replay.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

std::vector<ModuleStep> module_steps(const io::ModelConfig& config) {
  std::vector<ModuleStep> steps;
  int64_t index = 1;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    steps.push_back({index++, ModuleKind::kAttention, l, fmt::format("model.layers.{}.self_attn", l)});
    if (config.moe_layer(l))
      steps.push_back({index++, ModuleKind::kMoe, l, moe_module_key(l)});
    else
      steps.push_back({index++, ModuleKind::kMlp, l, fmt::format("model.layers.{}.mlp", l)});
  }
  steps.push_back({index++, ModuleKind::kNorm, -1, "model.norm.norm"});
  steps.push_back({index++, ModuleKind::kHead, -1, "lm_head.linear"});
  return steps;
}

int64_t decoder_weight_count(const io::ModelConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t attention = h * c.q_dim() + 2 * h * c.kv_dim() + c.q_dim() * h;
  int64_t total = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    total += attention + 3 * h * (c.moe_layer(l) ? c.num_experts * c.expert_intermediate : c.intermediate_size);
  return total;
}

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

namespace {

std::string format_bytes(double b) {
  if (b >= 1e9) return fmt::format("{:.1f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.1f} KB", b / 1e3);
  return fmt::format("{:.0f} B", b);
}

// An engine's module_stats() in words: "GPU 0.41 s, copies 93 % hidden, peak VRAM 3.2 GB";
// fields this does not know are shown by name.
std::string engine_text(const ordered_json& stats) {
  std::string out;
  for (const auto& [k, v] : stats.items()) {
    std::string part;
    if (!v.is_number()) {
      part = fmt::format("{} {}", k, v.is_string() ? v.get<std::string>() : v.dump());
    } else {
      const double x = v.get<double>();
      if (k == "gpu_s") part = fmt::format("GPU {:.2f} s", x);
      else if (k == "copy_s") part = fmt::format("copies {:.2f} s", x);
      else if (k == "copy_hidden") part = fmt::format("copies {:.0f} % hidden", x <= 1 ? 100 * x : x);
      else if (k == "peak_vram_bytes") part = "peak VRAM " + format_bytes(x);
      else if (k.ends_with("_bytes")) part = fmt::format("{} {}", k.substr(0, k.size() - 6), format_bytes(x));
      else if (k.ends_with("_s")) part = fmt::format("{} {:.2f} s", k.substr(0, k.size() - 2), x);
      else part = fmt::format("{} {}", k, v.dump());
    }
    out += (out.empty() ? "" : ", ") + part;
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string format_duration(double s) {
  if (s < 60) return fmt::format("{:.1f} s", s);
  const int64_t t = std::llround(s);
  if (t < 3600) return fmt::format("{}m {:02}s", t / 60, t % 60);
  return fmt::format("{}h {:02}m", t / 3600, (t % 3600) / 60);
}

}  // namespace

void Progress::message(const std::string& event, const std::string& text, const ordered_json& fields) {
  if (json_) {
    ordered_json j{{"event", event}};
    if (!text.empty()) j["message"] = text;
    if (fields.is_object())
      for (const auto& [k, v] : fields.items()) j[k] = v;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf(" -- %s\n", text.c_str());
  }
  std::fflush(stdout);
}

void Progress::module_done(Pass pass, const ModuleStep& step, int64_t n, int64_t total,
                           double seconds, const ordered_json& fields) {
  recent_.push_back(seconds);
  if (recent_.size() > 10) recent_.erase(recent_.begin());
  const double avg = std::accumulate(recent_.begin(), recent_.end(), 0.0) / static_cast<double>(recent_.size());
  const double eta = avg * static_cast<double>(total - n);
  const double rss_mb = static_cast<double>(peak_rss_bytes()) / (1024.0 * 1024.0);
  if (json_) {
    ordered_json j{{"event", "module"},  {"pass", pass_name(pass)}, {"module", step.key},
                   {"index", step.index}, {"step", n},              {"steps", total},
                   {"duration_s", seconds}, {"avg_s", avg},         {"eta_s", eta},
                   {"peak_rss_mb", std::round(rss_mb)}};
    for (const auto& [k, v] : fields.items()) j[k] = v;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string extra, engine;
    for (const auto& [k, v] : fields.items()) {
      if (k == "engine") {
        engine = engine_text(v);
      } else if (k == "host") {
        const double file = v.value("file_bytes", 0.0);
        if (file > 0)
          extra += fmt::format("  states: RAM {}, file {}", format_bytes(v.value("ram_bytes", 0.0)),
                               format_bytes(file));
      } else if (k == "snapshot_bytes") {
        extra += fmt::format("  snapshot: {}", format_bytes(v.get<double>()));
      } else if (k != "snapshot_s") {
        extra += v.is_number_float() ? fmt::format("  {}: {:.6f}", k, v.get<double>())
                                     : fmt::format("  {}: {}", k, v.dump());
      }
    }
    if (!engine.empty()) engine = "\n    " + engine;
    std::printf(" -- %s %s\n    step %lld/%lld  duration %s  avg %.2f s/step  ETA %s  peak RSS %.0f MB%s%s\n",
                pass == Pass::kMeasure ? "Measured" : "Quantized", step.key.c_str(),
                static_cast<long long>(n), static_cast<long long>(total), format_duration(seconds).c_str(),
                avg, format_duration(eta).c_str(), rss_mb, extra.c_str(), engine.c_str());
  }
  std::fflush(stdout);
}

void run_pass(Job& job, Pass pass, const std::vector<ModuleStep>& steps,
              memory::HostBuffer states, const StepWork& work, Progress& progress,
              int64_t step_offset, memory::HostStore& store, double snapshot_interval_s) {
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  progress.reset_timing();
  const int64_t total = static_cast<int64_t>(steps.size());
  int64_t last_changing = -1;
  for (const ModuleStep& step : steps)
    if (changes_states(step.kind)) last_changing = step.index;
  Clock::time_point last_snapshot = Clock::now();
  for (int64_t i = 0; i < total; ++i) {
    const ModuleStep& step = steps[static_cast<size_t>(i)];
    if (step.index <= job.last_module(pass)) continue;
    const auto t0 = Clock::now();
    StepOutcome out = work(step, states.view());
    // Host time around the engine, by piece (the work's own pieces come in fields["host"]).
    ordered_json host = out.fields.contains("host") ? std::move(out.fields["host"]) : ordered_json::object();
    out.fields.erase("host");
    host["work_s"] = since(t0);
    const bool changed = !out.states.empty();
    bool snapshot = false;
    if (changed) {
      auto h0 = Clock::now();
      const int64_t clamped = check_states(out.states, step.key);
      if (clamped > 0) out.fields["inf_clamped"] = clamped;
      host["check_s"] = since(h0);
      h0 = Clock::now();
      states.reset();  // the input is done with: its RAM goes to the output first
      host["free_s"] = since(h0);
      h0 = Clock::now();
      states = store.adopt(std::move(out.states));
      host["adopt_s"] = since(h0);
      snapshot = since(last_snapshot) >= snapshot_interval_s || step.index == last_changing;
    }
    const auto c0 = Clock::now();
    job.commit(pass, step.index, snapshot ? states.view() : TensorView());
    host["commit_s"] = since(c0);
    if (snapshot) {
      last_snapshot = Clock::now();
      out.fields["snapshot_bytes"] = states.nbytes();
      out.fields["snapshot_s"] = since(c0);
    }
    const memory::HostStoreStats hs = store.stats();
    host["ram_bytes"] = hs.ram_bytes;
    host["file_bytes"] = hs.file_bytes;
    out.fields["host"] = std::move(host);
    progress.module_done(pass, step, i + 1, total, since(t0), out.fields);
    maybe_test_abort(step_offset + i + 1);
  }
}

namespace {

// Calibration rows of one pass, made once and then read back from the job folder.
Tensor calibration_ids(Job& job, const std::string& name, int64_t rows, int64_t length,
                       const tokenizer::Tokenizer& tok, const fs::path& model_dir,
                       Progress& progress) {
  if (std::optional<Tensor> t = job.load_rows(name)) {
    EXQ_CHECK(t->dtype() == DType::I32 && t->shape() == Shape({rows, length}),
              "{}: calibration rows {} do not match {} x {}; start over with -nr",
              (job.dir() / ("cal_" + name + ".safetensors")).string(), shape_str(t->shape()), rows,
              length);
    return std::move(*t);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const JobArgs& a = job.args();
  CalibrationRows cal;
  if (a.cal_files.empty()) {
    model::LlamaModel model = model::LlamaModel::load(model_dir);
    ProgressBar bar("sample", "Sampling calibration text from the model", "tokens", progress.json(),
                    {{"pass", name}});
    cal = self_sampled_rows(model, tok, rows, length, 0x5eed, bar.callback());
    bar.finish();
  } else {
    ProgressBar bar("tokenize", "Tokenizing calibration files", "bytes", progress.json(),
                    {{"pass", name}});
    cal = rows_from_files(tok, std::vector<fs::path>(a.cal_files.begin(), a.cal_files.end()), rows,
                          length, bar.callback());
    bar.finish();
  }
  Tensor ids(DType::I32, {rows, length});
  std::copy(cal.ids.begin(), cal.ids.end(), ids.data<int32_t>());
  job.save_rows(name, ids);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  progress.message("calibration",
                   fmt::format("Calibration rows for {}: {} x {} tokens ({}) in {:.1f} s", name,
                               rows, length, calibration_dataset_name(a.cal_files), s),
                   {{"pass", name}, {"rows", rows}, {"length", length}, {"seconds", s}});
  return ids;
}

const QuantOption& require_option(const MeasuredRow& row, std::string_view linear,
                                  const std::string& key) {
  const QuantOption* o = row.find(linear);
  if (o == nullptr) throw Error(fmt::format("measurement: {} has no option for {}", key, linear));
  return *o;
}

const MeasuredRow& chosen_row(const Measurement& m, const std::vector<std::pair<std::string, int>>& choice,
                              const std::string& key) {
  for (const auto& [k, row] : choice) {
    if (k != key) continue;
    const ModuleMeasurement* mm = m.find(key);
    EXQ_CHECK(mm != nullptr && mm->rows && row >= 0 && row < static_cast<int>(mm->rows->size()),
              "job: the choice for {} (row {}) is not in the measurement", key, row);
    return (*mm->rows)[static_cast<size_t>(row)];
  }
  throw Error(fmt::format("job: no optimizer choice for {}", key));
}

// Keeps the float32 weights of the layer in use (attention and MLP of a layer share them) and
// widens the next layer on a background thread while the engine works on this one. The
// prefetch runs off the pool (parallel_for serves one caller at a time); the bytes are the same.
class LayerCache {
 public:
  LayerCache(const io::SafetensorsModel& files, const io::ModelConfig& config)
      : files_(files), config_(config) {}
  ~LayerCache() {
    if (next_.valid()) next_.wait();
  }
  LayerCache(const LayerCache&) = delete;
  LayerCache& operator=(const LayerCache&) = delete;

  const LayerF32& get(int64_t layer) {
    if (index_ != layer) {
      const auto t0 = std::chrono::steady_clock::now();
      if (next_.valid() && next_layer_ == layer) {
        layer_ = next_.get();  // rethrows the prefetch's error at the point a direct load would
      } else {
        if (next_.valid()) next_.wait();
        next_ = {};
        layer_ = load_layer_f32(files_, config_, layer);
      }
      index_ = layer;
      wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      prefetch(layer + 1);
    }
    return layer_;
  }
  // Starts widening `layer` in the background unless it is loaded or on its way.
  void prefetch(int64_t layer) {
    if (layer < 0 || layer >= config_.num_hidden_layers || layer == index_) return;
    if (next_.valid()) {
      if (next_layer_ == layer) return;
      next_.wait();
    }
    next_layer_ = layer;
    next_ = std::async(std::launch::async, [this, layer] {
      return load_layer_f32(files_, config_, layer, /*use_pool=*/false);
    });
  }
  // Seconds get() spent loading or waiting for a prefetch since the last call.
  double take_wait_s() { return std::exchange(wait_s_, 0.0); }

 private:
  const io::SafetensorsModel& files_;
  const io::ModelConfig& config_;
  LayerF32 layer_;
  int64_t index_ = -1;
  std::future<LayerF32> next_;
  int64_t next_layer_ = -1;
  double wait_s_ = 0;
};

ordered_json accuracy_fields(const ModuleResult& r) {
  double best = 0, worst = 1;
  for (double e : r.errors) {
    best = std::max(best, 1 - e);
    worst = std::min(worst, 1 - e);
  }
  return {{"accuracy_min", worst}, {"accuracy_max", best}};
}

}  // namespace

void run_conversion(const ConvertOptions& options) {
  const JobArgs& a = options.args;
  EXQ_CHECK(a.bits >= 2.0 && a.bits <= 8.0, "-b: bits per weight must be within 2..8, got {}", a.bits);
  EXQ_CHECK(is_exl2_bits(a.head_bits), "-hb: head bits must be one of 2, 3, 4, 5, 6, 8, got {}",
            a.head_bits);
  EXQ_CHECK(a.rows > 0 && a.length > 0 && a.measure_rows > 0 && a.measure_length > 0,
            "rows and lengths must be positive (-r {} -l {} -mr {} -ml {})", a.rows, a.length,
            a.measure_rows, a.measure_length);
  EXQ_CHECK(a.measurement_in.empty() || a.measurement_out.empty(), "-m and -om exclude each other");
  EXQ_CHECK(a.shard_mb > 0, "-ss: shard size must be positive, got {} MB", a.shard_mb);
  parse_error_metric(a.error_metric, "--error-metric");
  const fs::path model_dir = a.model_dir;
  const fs::path work_dir = options.work_dir;
  if (!fs::is_regular_file(model_dir / "config.json"))
    throw Error(fmt::format("{} is not a model folder (no config.json)", model_dir.string()));
  const io::ModelConfig config = io::load_model_config(model_dir);
  const io::SafetensorsModel files = io::SafetensorsModel::open(model_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(model_dir / "tokenizer.json");
  const bool tied = config.tie_word_embeddings || !files.contains("lm_head.weight");
  Progress progress(options.status_json);

  const bool has_job = fs::exists(work_dir / "job.json");
  if (options.resume == ConvertOptions::Resume::kResume && !has_job)
    throw Error(fmt::format("-res: no job to resume in {} (job.json missing)", work_dir.string()));
  const bool resume = has_job && options.resume != ConvertOptions::Resume::kRestart;
  Job job = Job::open(work_dir, a, resume);
  progress.message("job",
                   job.resumed() ? fmt::format("Resuming job in {} (measured up to module {}, "
                                               "quantized up to module {})",
                                               work_dir.string(), job.last_module(Pass::kMeasure),
                                               job.last_module(Pass::kQuantize))
                                 : fmt::format("Starting job in {}", work_dir.string()),
                   {{"work_dir", work_dir.string()}, {"resumed", job.resumed()}});

  const std::vector<ModuleStep> steps = module_steps(config);
  const int64_t last_index = steps.back().index;
  LayerCache layers(files, config);
  const auto layer = [&layers](int64_t l) -> const LayerF32& { return layers.get(l); };
  memory::HostStore store({.ram_budget_bytes = options.host_budget_bytes < 0
                                                   ? memory::default_host_budget()
                                                   : options.host_budget_bytes,
                           .spill_dir = work_dir / "spill"});
  // The states a pass starts from: the embedding, or on resume the rebuilt ones.
  auto start_states = [&](Pass pass, const Tensor& ids, Engine& engine) {
    auto embed = [&] {
      ProgressBar bar("embed", "Embedding calibration rows", "rows", progress.json(),
                      {{"pass", pass == Pass::kMeasure ? "measure" : "quant"}});
      const TensorView table = files.get("model.embed_tokens.weight");
      Tensor x = embed_calibration_rows(table, ids.span<int32_t>(), ids.dim(0), ids.dim(1), bar.callback(),
                                        model::embedding_scale(config, table.dtype()));
      bar.finish();
      return store.adopt(std::move(x));
    };
    if (job.last_module(pass) < 0) return embed();
    ReplayResult r = rebuild_states(job, pass, steps, config, store, engine, layer, embed);
    EXQ_CHECK(r.states.shape() == Shape({ids.dim(0), ids.dim(1), config.hidden_size}),
              "{}: resumed states are {}, expected [{}, {}, {}]; start over with -nr",
              job.states_path(pass, r.from).string(), shape_str(r.states.shape()), ids.dim(0),
              ids.dim(1), config.hidden_size);
    progress.message("replay",
                     fmt::format("{} states rebuilt from {} and {} replayed module(s) in {:.1f} s",
                                 pass == Pass::kMeasure ? "Measurement" : "Quantization",
                                 r.from >= 0 ? fmt::format("the snapshot of module {}", r.from)
                                             : std::string("the embedding"),
                                 r.modules, r.seconds),
                     {{"pass", pass_name(pass)}, {"snapshot", r.from}, {"modules", r.modules},
                      {"seconds", r.seconds}});
    return std::move(r.states);
  };
  auto make_engine = [&](Pass pass, int64_t max_tokens) {
    std::unique_ptr<Engine> engine = options.engine(config, max_tokens);
    EXQ_CHECK(engine != nullptr, "no engine for the {} pass", pass_name(pass));
    const int64_t budget = store.ram_budget_bytes();
    progress.message("engine",
                     fmt::format("{} pass on {} (host budget {:.1f} GB, snapshots every {} s)",
                                 pass == Pass::kMeasure ? "Measurement" : "Quantization",
                                 engine->name(), static_cast<double>(budget) / 1e9,
                                 options.snapshot_interval_s),
                     {{"pass", pass_name(pass)}, {"device", engine->name()},
                      {"host_budget_bytes", budget},
                      {"snapshot_interval_s", options.snapshot_interval_s}});
    return engine;
  };
  auto engine_fields = [](Engine& engine, ordered_json& fields) {
    ordered_json stats = engine.module_stats();
    if (stats.is_object() && !stats.empty()) fields["engine"] = std::move(stats);
  };

  // ---- Measurement ----
  Measurement measurement;
  if (a.measurement_in.empty()) {
    if (job.last_module(Pass::kMeasure) < last_index) {
      if (job.last_module(Pass::kMeasure) < 0) layers.prefetch(0);
      const Tensor ids = calibration_ids(job, "measure", a.measure_rows, a.measure_length, tok,
                                         model_dir, progress);
      std::unique_ptr<Engine> engine = make_engine(Pass::kMeasure, a.measure_length);
      memory::HostBuffer states = start_states(Pass::kMeasure, ids, *engine);
      MeasureOptions measure_options;
      measure_options.metric = parse_error_metric(a.error_metric, "job error_metric");
      auto work = [&](const ModuleStep& step, const TensorView& x) {
        StepOutcome out;
        job.measurement().last_module_idx = step.index;
        if (changes_states(step.kind)) {
          const LayerF32& l = layers.get(step.layer);
          const double load_s = layers.take_wait_s();
          const auto e0 = std::chrono::steady_clock::now();
          ModuleResult r = step.kind == ModuleKind::kAttention ? engine->measure_attention(l, x, step.key, measure_options)
                           : step.kind == ModuleKind::kMoe     ? engine->measure_moe(l, x, step.key, measure_options)
                                                               : engine->measure_mlp(l, x, step.key, measure_options);
          const double engine_s = seconds_since(e0);
          job.measurement().modules.push_back(std::move(r.measurement));
          out.fields = accuracy_fields(r);
          engine_fields(*engine, out.fields);
          out.fields["host"] = {{"load_s", load_s}, {"engine_s", engine_s}};
          out.states = std::move(r.target);
        } else {
          job.measurement().modules.push_back({step.key, std::nullopt});
        }
        return out;
      };
      run_pass(job, Pass::kMeasure, steps, std::move(states), work, progress, 0, store,
               options.snapshot_interval_s);
    }
    measurement = job.measurement();
    write_measurement(work_dir / "measurement.json", measurement);
    if (!a.measurement_out.empty()) {
      write_measurement(a.measurement_out, measurement);
      progress.message("measurement", fmt::format("Measurement written to {}", a.measurement_out),
                       {{"path", a.measurement_out}});
      return;
    }
  } else {
    measurement = read_measurement(a.measurement_in);
  }

  // ---- Optimizer ----
  if (job.choice().empty()) {
    std::vector<ModuleCandidates> candidates;
    for (const ModuleStep& step : steps) {
      if (!changes_states(step.kind)) continue;
      const ModuleMeasurement* mm = measurement.find(step.key);
      if (mm == nullptr || !mm->rows || mm->rows->empty())
        throw Error(fmt::format("measurement has no rows for {}", step.key),
                    ErrorContext{.file = a.measurement_in});
      ModuleCandidates c{step.key, {}};
      for (const MeasuredRow& r : *mm->rows)
        c.rows.push_back({r.total_bits, std::max(1.0 - r.accuracy, 1e-12)});
      candidates.push_back(std::move(c));
    }
    const OptimizeResult r = optimize(candidates, {.target_bpw = a.bits,
                                                   .decoder_weights = decoder_weight_count(config)});
    for (size_t i = 0; i < candidates.size(); ++i)
      job.choice().emplace_back(candidates[i].name, r.choice[i]);
    job.save();
    progress.message("optimize",
                     fmt::format("Optimizer: {:.4f} bpw (target {:.4f}), sum log err {:.4f}, max err {:.6f}",
                                 r.bpw, a.bits, r.sum_log_err, r.max_err),
                     {{"bpw", r.bpw}, {"target_bpw", a.bits}, {"sum_log_err", r.sum_log_err},
                      {"max_err", r.max_err}, {"total_bits", r.total_bits}});
  }

  // ---- Quantization ----
  if (job.last_module(Pass::kQuantize) < last_index) {
    // A fresh pass starts at layer 0: widen it beside the calibration rows and the embedding.
    if (job.last_module(Pass::kQuantize) < 0) layers.prefetch(0);
    const Tensor ids = calibration_ids(job, "quant", a.rows, a.length, tok, model_dir, progress);
    std::unique_ptr<Engine> engine = make_engine(Pass::kQuantize, a.length);
    memory::HostBuffer states = start_states(Pass::kQuantize, ids, *engine);
    auto work = [&](const ModuleStep& step, const TensorView& x) {
      StepOutcome out;
      std::optional<QuantStep> q;
      ordered_json host = ordered_json::object();
      const auto layer_f32 = [&](int64_t l) -> const LayerF32& {
        const LayerF32& w = layers.get(l);
        host["load_s"] = layers.take_wait_s();
        return w;
      };
      const auto e0 = std::chrono::steady_clock::now();
      if (step.kind == ModuleKind::kAttention) {
        const MeasuredRow& row = chosen_row(measurement, job.choice(), step.key);
        AttnOptions o;
        for (size_t i = 0; i < 4; ++i) o[i] = require_option(row, kAttnLinears[i], step.key);
        const LayerF32& w = layer_f32(step.layer);
        const auto t = std::chrono::steady_clock::now();
        q = engine->quantize_attention(w, step.layer, x, o);
        host["engine_s"] = seconds_since(t);
      } else if (step.kind == ModuleKind::kMlp || step.kind == ModuleKind::kMoe) {
        const bool moe = step.kind == ModuleKind::kMoe;
        const MeasuredRow& row = chosen_row(measurement, job.choice(), step.key);
        MlpOptions o;
        for (size_t i = 0; i < 3; ++i) o[i] = require_option(row, (moe ? kMoeLinears : kMlpLinears)[i], step.key);
        const LayerF32& w = layer_f32(step.layer);
        const auto t = std::chrono::steady_clock::now();
        q = moe ? engine->quantize_moe(w, step.layer, x, o) : engine->quantize_mlp(w, step.layer, x, o);
        host["engine_s"] = seconds_since(t);
      } else if (step.kind == ModuleKind::kHead) {
        if (tied) {
          out.fields["head"] = "tied to the embedding, kept as FP16";
        } else {
          // The final norm as the model multiplies by it (gemma: 1 + w).
          const Tensor final_norm = model::norm_weight(config, files.get("model.norm.weight"));
          q = engine->quantize_head(x, final_norm,
                                    files.get("lm_head.weight"),
                                    static_cast<float>(config.rms_norm_eps), a.head_bits);
        }
      }
      if (q) {
        if (step.kind == ModuleKind::kHead) host["engine_s"] = seconds_since(e0);
        const auto s0 = std::chrono::steady_clock::now();
        std::vector<io::NamedTensor> named;
        for (const auto& [key, packed] : q->packed) packed.append_to(named, key);
        job.save_module_tensors(step.key, named);
        host["save_s"] = seconds_since(s0);
        out.fields["rfn"] = q->rfn;
        engine_fields(*engine, out.fields);
        out.states = std::move(q->output);
      }
      if (!host.empty()) out.fields["host"] = std::move(host);
      return out;
    };
    run_pass(job, Pass::kQuantize, steps, std::move(states), work, progress,
             static_cast<int64_t>(steps.size()), store, options.snapshot_interval_s);
  }
  const memory::HostStoreStats hs = store.stats();
  if (hs.peak_bytes > 0)
    progress.message("host_memory",
                     fmt::format("Host states: peak {} in RAM, {} in spill files ({} buffer(s))",
                                 format_bytes(static_cast<double>(hs.peak_ram_bytes)),
                                 format_bytes(static_cast<double>(hs.peak_file_bytes)),
                                 hs.spilled_buffers),
                     {{"peak_ram_bytes", hs.peak_ram_bytes}, {"peak_file_bytes", hs.peak_file_bytes},
                      {"spilled_buffers", hs.spilled_buffers}, {"spilled_bytes", hs.spilled_bytes}});

  // ---- Compile ----
  const auto t0 = std::chrono::steady_clock::now();
  CompileInput ci;
  ci.model_dir = model_dir;
  ci.out_dir = a.out_dir;
  for (const ModuleStep& step : steps)
    if (changes_states(step.kind) || (step.kind == ModuleKind::kHead && !tied))
      ci.module_files.push_back(job.module_tensors_path(step.key));
  ci.bits = a.bits;
  ci.head_bits = a.head_bits;
  ci.cal_rows = a.rows;
  ci.cal_length = a.length;
  ci.dataset = calibration_dataset_name(a.cal_files);
  ci.shard_bytes = a.shard_mb * 1024 * 1024;
  const CompileResult cr = compile_model(ci);
  job.set_compiled();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  progress.message("compile",
                   fmt::format("Compiled {} ({} file(s), {:.1f} MB of tensors) in {:.1f} s",
                               a.out_dir, cr.files.size(), static_cast<double>(cr.tensor_bytes) / 1e6, s),
                   {{"out_dir", a.out_dir}, {"files", cr.files.size()}, {"tensor_bytes", cr.tensor_bytes}});
}

}  // namespace exq::quant
