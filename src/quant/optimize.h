// Optimizer: picks one measured option row per decoder module so that the decoder's bits stay
// within target_bpw x decoder weights, with least error.
//
// Objective (exact, not annealed): minimise sum(log err) subject to max(err) <= cap, where
// cap = (1 + max_err_slack) x the smallest cap for which the budget is feasible at all.
// The sum of log errors is solved by dynamic programming over the bit budget in units of
// `bits_unit` (each row's bits rounded UP, so the result never exceeds the budget), followed
// by an exact greedy fill of the bits the rounding left over.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace exq::quant {

struct Candidate {
  int64_t total_bits = 0;
  double error = 0;  // 1 - accuracy, > 0
};

struct ModuleCandidates {
  std::string name;  // e.g. "model.layers.3.mlp"
  std::vector<Candidate> rows;
};

struct OptimizeOptions {
  double target_bpw = 4.0;
  int64_t decoder_weights = 0;  // number of weights of all decoder linears
  double max_err_slack = 0.10;
  int64_t bits_unit = 4096;
};

struct OptimizeResult {
  std::vector<int> choice;  // row index per module
  int64_t total_bits = 0;
  double bpw = 0;
  double sum_log_err = 0;
  double max_err = 0;
  double err_cap = 0;
};

// Throws exq::Error when no choice fits the budget (names the smallest reachable bpw).
OptimizeResult optimize(const std::vector<ModuleCandidates>& modules, const OptimizeOptions& opt);

}  // namespace exq::quant
