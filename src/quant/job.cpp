#include "quant/job.h"

#include <fmt/format.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <system_error>

#include "core/error.h"
#include "io/atomic_file.h"

namespace exq::quant {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

constexpr int kJobVersion = 1;

template <typename T>
T get_or(const ordered_json& j, const char* key, T fallback) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->template get<T>();
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

}  // namespace

const char* pass_name(Pass pass) { return pass == Pass::kMeasure ? "measure" : "quantize"; }

ordered_json JobArgs::to_json() const {
  return ordered_json{{"model_dir", model_dir},
                      {"out_dir", out_dir},
                      {"bits", bits},
                      {"head_bits", head_bits},
                      {"cal_files", cal_files},
                      {"rows", rows},
                      {"length", length},
                      {"measure_rows", measure_rows},
                      {"measure_length", measure_length},
                      {"measurement_in", measurement_in},
                      {"measurement_out", measurement_out},
                      {"shard_mb", shard_mb},
                      {"error_metric", error_metric}};
}

JobArgs JobArgs::from_json(const ordered_json& j, const std::string& source) {
  try {
    JobArgs a;
    a.model_dir = j.at("model_dir").get<std::string>();
    a.out_dir = j.at("out_dir").get<std::string>();
    a.bits = j.at("bits").get<double>();
    a.head_bits = j.at("head_bits").get<int>();
    a.cal_files = j.at("cal_files").get<std::vector<std::string>>();
    a.rows = j.at("rows").get<int64_t>();
    a.length = j.at("length").get<int64_t>();
    a.measure_rows = j.at("measure_rows").get<int64_t>();
    a.measure_length = j.at("measure_length").get<int64_t>();
    a.measurement_in = j.at("measurement_in").get<std::string>();
    a.measurement_out = j.at("measurement_out").get<std::string>();
    a.shard_mb = j.at("shard_mb").get<int64_t>();
    // Jobs written before the switch existed measured with exllamav2's per-row error.
    a.error_metric = j.value("error_metric", std::string("row"));
    return a;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("job arguments: {}", e.what()), ErrorContext{.file = source});
  }
}

std::vector<std::string> JobArgs::diff(const JobArgs& other) const {
  const ordered_json a = to_json(), b = other.to_json();
  std::vector<std::string> out;
  for (const auto& [key, value] : a.items())
    if (!b.contains(key) || b.at(key) != value) out.push_back(key);
  return out;
}

Job Job::open(const fs::path& work_dir, const JobArgs& args, bool resume) {
  Job job;
  job.dir_ = work_dir;
  job.args_ = args;
  std::error_code ec;
  fs::create_directories(work_dir, ec);
  if (ec || !fs::is_directory(work_dir))
    throw Error(fmt::format("cannot create work folder {}: {}", work_dir.string(),
                            ec ? ec.message() : "not a folder"),
                ErrorContext{.file = work_dir.string()});
  try {
    io::write_file_atomic(work_dir / ".exq-write-test", std::string_view("ok"));
    fs::remove(work_dir / ".exq-write-test", ec);
  } catch (const Error& e) {
    throw Error(fmt::format("work folder {} is not writable: {}", work_dir.string(), e.message()),
                ErrorContext{.file = work_dir.string()});
  }

  const fs::path job_json = work_dir / "job.json";
  if (fs::exists(job_json) && resume) {
    ordered_json j;
    try {
      j = ordered_json::parse(io::read_file(job_json, "the job file"));
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("job file is not valid JSON: {}", e.what()),
                  ErrorContext{.file = job_json.string()});
    }
    EXQ_CHECK(get_or<int>(j, "version", 0) == kJobVersion,
              "{}: job version {} is not supported (expected {})", job_json.string(),
              get_or<int>(j, "version", 0), kJobVersion);
    const JobArgs stored = JobArgs::from_json(j.at("args"), job_json.string());
    const std::vector<std::string> changed = stored.diff(args);
    if (!changed.empty()) {
      std::string names;
      for (const std::string& n : changed) names += (names.empty() ? "" : ", ") + n;
      throw Error(fmt::format("cannot resume the job in {}: arguments changed ({}); use the same "
                              "arguments, or -nr to start over",
                              work_dir.string(), names),
                  ErrorContext{.file = job_json.string()});
    }
    job.resumed_ = true;
    job.last_[0] = get_or<int64_t>(j, "last_module_idx", -1);
    job.last_[1] = get_or<int64_t>(j, "q_last_module_idx", -1);
    job.states_idx_[0] = get_or<int64_t>(j, "m_states_idx", -1);
    job.states_idx_[1] = get_or<int64_t>(j, "q_states_idx", -1);
    if (j.contains("measurement") && !j.at("measurement").is_null())
      job.measurement_ = measurement_from_json(j.at("measurement"), job_json.string());
    if (j.contains("choice"))
      for (const auto& c : j.at("choice"))
        job.choice_.emplace_back(c.at(0).get<std::string>(), c.at(1).get<int>());
    job.compiled_ = get_or<bool>(j, "compiled", false);
    return job;
  }
  // Fresh start: drop whatever an earlier job left.
  for (const auto& entry : fs::directory_iterator(work_dir)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("states-") || name.starts_with("cal_") || name == "quant" ||
        name == "job.json")
      remove_quietly(entry.path());
  }
  job.write_job_json();
  return job;
}

fs::path Job::states_path(Pass pass, int64_t index) const {
  return dir_ / fmt::format("states-{}-{:04}.safetensors", pass == Pass::kMeasure ? 'm' : 'q',
                            index);
}

std::optional<Tensor> Job::load_rows(const std::string& name) const {
  const fs::path p = dir_ / fmt::format("cal_{}.safetensors", name);
  if (!fs::exists(p)) return std::nullopt;
  const io::SafetensorsFile f = io::SafetensorsFile::open(p);
  return Tensor::copy_of(f.get("ids"));
}

void Job::save_rows(const std::string& name, const TensorView& ids) {
  io::write_safetensors(dir_ / fmt::format("cal_{}.safetensors", name), {{"ids", ids}});
}

int64_t Job::last_module(Pass pass) const { return last_[static_cast<int>(pass)]; }

Tensor Job::load_states(Pass pass) const {
  const int64_t last = states_idx_[static_cast<int>(pass)];
  if (last < 0) return Tensor();
  const fs::path p = states_path(pass, last);
  if (!fs::exists(p))
    throw Error(fmt::format("state snapshot of module {} is missing; start over with -nr", last),
                ErrorContext{.file = p.string()});
  const io::SafetensorsFile f = io::SafetensorsFile::open(p);
  return Tensor::copy_of(f.get("states"));
}

void Job::commit(Pass pass, int64_t index, const TensorView& states) {
  const int p = static_cast<int>(pass);
  const int64_t previous = states_idx_[p];
  const bool new_states = !states.empty();
  if (new_states) {
    io::write_safetensors(states_path(pass, index), {{"states", states}});
    states_idx_[p] = index;
  }
  last_[p] = index;
  write_job_json();
  if (new_states && previous >= 0 && previous != index) remove_quietly(states_path(pass, previous));
}

fs::path Job::module_tensors_path(const std::string& key) const {
  return dir_ / "quant" / (key + ".safetensors");
}

void Job::save_module_tensors(const std::string& key, const std::vector<io::NamedTensor>& tensors) {
  std::error_code ec;
  fs::create_directories(dir_ / "quant", ec);
  io::write_safetensors(module_tensors_path(key), tensors);
}

void Job::set_compiled() {
  compiled_ = true;
  write_job_json();
}

void Job::write_job_json() {
  ordered_json j;
  j["version"] = kJobVersion;
  j["args"] = args_.to_json();
  j["last_module_idx"] = last_[0];
  j["q_last_module_idx"] = last_[1];
  j["m_states_idx"] = states_idx_[0];
  j["q_states_idx"] = states_idx_[1];
  j["measurement"] = measurement_.modules.empty() ? ordered_json() : measurement_to_json(measurement_);
  ordered_json choice = ordered_json::array();
  for (const auto& [key, row] : choice_) choice.push_back(ordered_json::array({key, row}));
  j["choice"] = choice;
  j["compiled"] = compiled_;
  io::write_file_atomic(dir_ / "job.json", j.dump(2) + "\n");
}

void maybe_test_abort(int64_t step) {
  const char* env = std::getenv("EXQ_TEST_ABORT_AFTER");
  if (env == nullptr || *env == 0) return;
  if (std::strtoll(env, nullptr, 10) == step) std::raise(SIGKILL);
}

}  // namespace exq::quant
