#include "quant/optimize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace exq::quant {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Smallest total bits using only rows with error <= cap (INT64_MAX when some module has none).
int64_t min_bits_under_cap(const std::vector<ModuleCandidates>& modules, double cap) {
  int64_t total = 0;
  for (const auto& m : modules) {
    int64_t best = std::numeric_limits<int64_t>::max();
    for (const auto& r : m.rows)
      if (r.error <= cap) best = std::min(best, r.total_bits);
    if (best == std::numeric_limits<int64_t>::max()) return best;
    total += best;
  }
  return total;
}

// DP over budget units; returns the choice minimising sum(log err) with err <= cap, or empty.
std::vector<int> solve_dp(const std::vector<ModuleCandidates>& modules, double cap, int64_t budget,
                          int64_t unit) {
  const int64_t units = budget / unit;
  const size_t n = static_cast<size_t>(units) + 1;
  std::vector<double> dp(n, kInf), next(n);
  dp[0] = 0;
  std::vector<std::vector<int8_t>> arg(modules.size(), std::vector<int8_t>(n, -1));
  for (size_t k = 0; k < modules.size(); ++k) {
    std::fill(next.begin(), next.end(), kInf);
    const auto& rows = modules[k].rows;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].error > cap) continue;
      const int64_t c = (rows[i].total_bits + unit - 1) / unit;
      if (c > units) continue;
      const double v = std::log(rows[i].error);
      for (int64_t b = c; b <= units; ++b) {
        const double cand = dp[static_cast<size_t>(b - c)] + v;
        if (cand < next[static_cast<size_t>(b)]) {
          next[static_cast<size_t>(b)] = cand;
          arg[k][static_cast<size_t>(b)] = static_cast<int8_t>(i);
        }
      }
    }
    dp.swap(next);
  }
  const auto best = std::min_element(dp.begin(), dp.end());
  if (*best == kInf) return {};
  int64_t b = best - dp.begin();
  std::vector<int> choice(modules.size());
  for (size_t k = modules.size(); k-- > 0;) {
    const int i = arg[k][static_cast<size_t>(b)];
    choice[k] = i;
    b -= (modules[k].rows[static_cast<size_t>(i)].total_bits + unit - 1) / unit;
  }
  return choice;
}

// Spends leftover bits exactly: repeatedly applies the upgrade with the best log-error gain
// per extra bit that still fits and keeps err <= cap.
void greedy_fill(const std::vector<ModuleCandidates>& modules, double cap, int64_t budget,
                 std::vector<int>& choice, int64_t& used) {
  for (;;) {
    double best_gain = 0;
    size_t best_k = 0;
    int best_i = -1;
    for (size_t k = 0; k < modules.size(); ++k) {
      const auto& cur = modules[k].rows[static_cast<size_t>(choice[k])];
      for (size_t i = 0; i < modules[k].rows.size(); ++i) {
        const auto& r = modules[k].rows[i];
        if (r.error > cap || r.error >= cur.error) continue;
        const int64_t extra = r.total_bits - cur.total_bits;
        if (used + extra > budget) continue;
        const double gain = (std::log(cur.error) - std::log(r.error)) /
                            static_cast<double>(std::max<int64_t>(extra, 1));
        if (gain > best_gain) {
          best_gain = gain;
          best_k = k;
          best_i = static_cast<int>(i);
        }
      }
    }
    if (best_i < 0) return;
    used += modules[best_k].rows[static_cast<size_t>(best_i)].total_bits -
            modules[best_k].rows[static_cast<size_t>(choice[best_k])].total_bits;
    choice[best_k] = best_i;
  }
}

}  // namespace

OptimizeResult optimize(const std::vector<ModuleCandidates>& modules, const OptimizeOptions& opt) {
  EXQ_CHECK(!modules.empty(), "optimizer: no modules were measured");
  EXQ_CHECK(opt.decoder_weights > 0, "optimizer: decoder weight count must be positive");
  EXQ_CHECK(opt.bits_unit > 0, "optimizer: bits_unit must be positive");
  for (const auto& m : modules) {
    EXQ_CHECK(!m.rows.empty() && m.rows.size() <= 127, "optimizer: module {} has {} rows",
              m.name, m.rows.size());
    for (const auto& r : m.rows)
      EXQ_CHECK(r.error > 0 && std::isfinite(r.error) && r.total_bits > 0,
                "optimizer: module {} has an invalid row (error {}, bits {})", m.name, r.error,
                r.total_bits);
  }
  const int64_t budget =
      static_cast<int64_t>(std::floor(opt.target_bpw * static_cast<double>(opt.decoder_weights)));

  std::vector<double> caps;
  for (const auto& m : modules)
    for (const auto& r : m.rows) caps.push_back(r.error);
  std::sort(caps.begin(), caps.end());
  caps.erase(std::unique(caps.begin(), caps.end()), caps.end());
  // Smallest feasible cap by binary search (feasibility is monotone in the cap).
  size_t lo = 0, hi = caps.size();
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (min_bits_under_cap(modules, caps[mid]) <= budget) hi = mid;
    else lo = mid + 1;
  }
  if (lo == caps.size()) {
    const int64_t least = min_bits_under_cap(modules, kInf);
    throw Error(fmt::format("target of {} bpw is below the smallest measured option ({:.4f} bpw)",
                            opt.target_bpw,
                            static_cast<double>(least) / static_cast<double>(opt.decoder_weights)));
  }
  const double cap = caps[lo] * (1.0 + opt.max_err_slack);

  // Rounding bits up per row can make a tight budget look infeasible: shrink the unit then.
  std::vector<int> choice;
  for (int64_t unit = opt.bits_unit; choice.empty(); unit /= 4) {
    choice = solve_dp(modules, cap, budget, std::max<int64_t>(unit, 1));
    if (unit <= 1) break;
  }
  EXQ_CHECK(!choice.empty(), "optimizer: no feasible choice at {} bpw", opt.target_bpw);

  OptimizeResult res;
  for (size_t k = 0; k < modules.size(); ++k)
    res.total_bits += modules[k].rows[static_cast<size_t>(choice[k])].total_bits;
  greedy_fill(modules, cap, budget, choice, res.total_bits);
  res.choice = choice;
  res.err_cap = cap;
  res.bpw = static_cast<double>(res.total_bits) / static_cast<double>(opt.decoder_weights);
  for (size_t k = 0; k < modules.size(); ++k) {
    const double e = modules[k].rows[static_cast<size_t>(choice[k])].error;
    res.sum_log_err += std::log(e);
    res.max_err = std::max(res.max_err, e);
  }
  return res;
}

}  // namespace exq::quant
