// gptq_quantize_batch v2: every option of a linear in one pass (gptq_plan.h: fixed blocks and
// super-blocks, steps, the error ring). Per step one launch each of the pending update, column
// maxima, grid errors, their sums and the row pass covers all options of the batch. After a
// block, the rest of its super-block is updated (U's rows split for the 3-pass TF32 GEMM once
// for all options, then one GEMM per option); after a super-block, every later row (one GEMM
// per option with K = 3 x 1024: a tenth of the traffic of one update per 128-row block). An
// option's GEMM calls are the same whatever the batch (its own contiguous, 256-byte aligned
// buffers), and every kernel computes a column from that column's data alone, so results do
// not depend on how options are batched, hence not on the VRAM budget. Options run in batches
// sized to the memory that is free (allocator budget, or the device); options with a group
// larger than the block go through v1.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"
#include "quant/cuda/gptq_batch.h"
#include "quant/cuda/gptq_launchers.h"

namespace exq::quant::cuda {
namespace {

constexpr size_t kMargin = size_t{64} << 20;  // left free for cuBLAS workspaces and rounding

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

size_t rounded(int64_t bytes) {
  return CachingAllocator::round_size(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
}

// Per-option element strides: every option's buffer starts 256-byte aligned.
struct Strides {
  int64_t wp, ring, wq, codes, e3;
  Strides(int64_t in, int64_t out, int64_t block_rows, int64_t super_rows)
      : wp(round_up(in * out, 64)),
        ring(round_up(2 * super_rows * out, 64)),
        wq(round_up(in * out, 128)),
        codes(round_up(in * out, 256)),
        e3(round_up(3 * block_rows * out, 64)) {}
};

// Device bytes one option of the batch takes (buffers of the whole batch scale with it).
size_t bytes_per_option(const Strides& st, int64_t out, int64_t parts, int64_t max_groups,
                        bool packed) {
  const int64_t b = 4 * (st.wp + st.ring + st.e3 + kGptqGrid * out + out + parts) +
                    2 * st.wq + (packed ? st.codes : 0) + kGptqGrid * 8 + max_groups * (out + 2);
  return static_cast<size_t>(b) + 8 * 4096;  // allocator rounding of ~10 buffers
}

// Bytes the batch may use: what the budget leaves, and what the device has free (its own free
// memory plus the allocator's cached blocks).
size_t available_bytes(const CachingAllocator& alloc) {
  size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const size_t cached = alloc.reserved() - std::min(alloc.reserved(), alloc.in_use());
  size_t avail = free + cached;
  if (alloc.budget() != CachingAllocator::kUnlimited) {
    const size_t used = alloc.in_use();
    avail = std::min(avail, alloc.budget() > used ? alloc.budget() - used : size_t{0});
  }
  return avail;
}

// W'[b:] -= U[s:b, b:]^T E[s:b] for one option from the stacked [Eh; Eh; El] (e3) and
// [Uh; Ul; Uh] (u3): gptq_cuda.cpp's flush_rows_tf32 GEMM.
void flush_gemm(cublasHandle_t handle, float* wp, const float* e3, const float* u3, int64_t out,
                int64_t n, int64_t k3) {
  const float alpha = -1.0f, beta = 1.0f;
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(out),
                            static_cast<int>(n), static_cast<int>(k3), &alpha, e3, CUDA_R_32F,
                            static_cast<int>(out), u3, CUDA_R_32F, static_cast<int>(n), &beta, wp,
                            CUDA_R_32F, static_cast<int>(out), CUBLAS_COMPUTE_32F_FAST_TF32,
                            CUBLAS_GEMM_DEFAULT));
}

GptqBatchStep make_step(const std::vector<BatchGroup>& groups,
                        const std::vector<int32_t>& group_offset, int* max_rows, int* active) {
  GptqBatchStep step{};
  *max_rows = 0;
  *active = 0;
  for (int o = 0; o < kGptqMaxBatch; ++o) {
    step.row_begin[o] = -1;
    if (o >= static_cast<int>(groups.size()) || groups[o].row_begin < 0) continue;
    const BatchGroup& g = groups[static_cast<size_t>(o)];
    step.row_begin[o] = g.row_begin;
    step.rows[o] = g.rows;
    step.bits[o] = g.bits;
    step.group[o] = group_offset[static_cast<size_t>(o)] + g.group;
    *max_rows = std::max(*max_rows, g.rows);
    ++*active;
  }
  return step;
}

// The step's pending updates (gptq_plan.h): its group's rows up to the super-block's end get
// E[block begin, a); with `past_super`, the rows past it get E[super begin, a) instead.
// Returns the largest row count, 0 when there is nothing to do.
int make_pending(const std::vector<BatchGroup>& groups, const BatchBlock& block, bool past_super,
                 GptqPendingStep* p) {
  *p = GptqPendingStep{};
  int max_rows = 0;
  for (size_t o = 0; o < groups.size(); ++o) {
    const BatchGroup& g = groups[o];
    if (g.row_begin < 0) continue;
    const int64_t a = g.row_begin, b = a + g.rows;
    const int64_t dst0 = past_super ? block.super_end : a;
    const int64_t dst1 = past_super ? b : std::min(b, block.super_end);
    const int64_t src0 = past_super ? block.super_begin : block.begin;
    if (dst1 <= dst0 || a <= src0) continue;
    p->dst_begin[o] = static_cast<int32_t>(dst0);
    p->dst_rows[o] = static_cast<int32_t>(dst1 - dst0);
    p->src_begin[o] = static_cast<int32_t>(src0);
    p->src_end[o] = static_cast<int32_t>(a);
    max_rows = std::max(max_rows, p->dst_rows[o]);
  }
  return max_rows;
}

int64_t env_rows(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long rows = std::strtol(v, &end, 10);
  EXQ_CHECK(end != v && *end == '\0' && rows >= lo && rows <= hi && (rows & (rows - 1)) == 0,
            "{}='{}': expected a power of two from {} to {}", name, v, lo, hi);
  return rows;
}

}  // namespace

size_t gptq_batch_min_bytes(int64_t out, int64_t in, bool want_packed) {
  const int64_t block_rows = gptq_batch_block_rows();
  const int64_t super_rows = gptq_batch_super_rows();
  const Strides st(in, out, block_rows, super_rows);
  const int64_t max_groups = (in + 31) / 32;  // groups are at least 32 rows
  return rounded(3 * super_rows * in * 4) + rounded(3 * super_rows * out * 4) + rounded(in * 4) +
         bytes_per_option(st, out, gptq_colmax_blocks(out), max_groups, want_packed);
}

int64_t gptq_batch_block_rows() {
  return env_rows("EXQ_GPTQ_BLOCK", kGptqBatchBlockRows, 32, 1024);
}

int64_t gptq_batch_super_rows() {
  return std::max(gptq_batch_block_rows(),
                  env_rows("EXQ_GPTQ_SUPER", kGptqBatchSuperRows, 32, 8192));
}

std::vector<DeviceGptqResult> gptq_quantize_batch_v2(const DeviceView& w,
                                                     const DevicePreparedHessian& h,
                                                     std::span<const QuantOption> options,
                                                     bool want_packed, GptqContext& ctx,
                                                     const GptqResultHook& on_weight) {
  // Everything that can fail on the host fails before the first launch.
  const bool deferred = want_packed && static_cast<bool>(ctx.packed_to);
  const GptqInputs inputs = check_gptq_inputs(w, h, options, want_packed, ctx, deferred);
  const int64_t out = inputs.out, in = inputs.in;
  const int64_t block_rows = gptq_batch_block_rows();
  const int64_t super_rows = gptq_batch_super_rows();
  std::vector<DeviceGptqResult> results(options.size());
  std::vector<size_t> batched, single;
  for (size_t k = 0; k < options.size(); ++k)
    (batchable(inputs.layouts[k], block_rows) ? batched : single).push_back(k);
  if (!single.empty()) {
    // v1 downloads into the layer itself, with the host perm.
    EXQ_CHECK(!want_packed || !h.perm.empty(),
              "gptq_quantize_batch: packed results of groups over {} rows need the host "
              "permutation (prepare_hessian)", block_rows);
    std::vector<QuantOption> subset;
    for (size_t k : single) subset.push_back(options[k]);
    GptqResultHook hook;
    if (on_weight)
      hook = [&](size_t i, DeviceGptqResult& r) { on_weight(single[i], r); };
    std::vector<DeviceGptqResult> part =
        gptq_quantize_batch_v1(w, h, subset, want_packed, ctx, hook);
    for (size_t i = 0; i < single.size(); ++i) results[single[i]] = std::move(part[i]);
  }
  if (batched.empty()) return results;

  const auto [stream, alloc, handle, grid, parts] = gptq_launch(ctx, out);
  const Strides st(in, out, block_rows, super_rows);
  int64_t max_groups = 0;
  for (size_t k : batched)
    max_groups = std::max(max_groups, static_cast<int64_t>(inputs.layouts[k].size()));

  // Batch size from the free memory: U's stack, and the results that stay on the device.
  const size_t result_bytes = rounded(in * out * 2);
  const size_t kept_results = on_weight ? 2 : batched.size();
  const size_t fixed = rounded(3 * super_rows * in * 4) + rounded(3 * super_rows * out * 4) +
                       rounded(in * 4) + kept_results * result_bytes + kMargin;
  const auto n = static_cast<int64_t>(batched.size());
  const int64_t batch = gptq_batch_size(available_bytes(alloc), fixed,
                                        bytes_per_option(st, out, parts, max_groups, want_packed),
                                        n);
  std::vector<std::vector<size_t>> chunks;
  std::vector<GptqBatchPlan> plans;
  for (int64_t c0 = 0; c0 < n; c0 += batch) {
    chunks.emplace_back(batched.begin() + c0, batched.begin() + std::min(n, c0 + batch));
    std::vector<std::vector<GroupSpan>> layouts;
    for (size_t k : chunks.back()) layouts.push_back(inputs.layouts[k]);
    plans.push_back(plan_gptq_batch(layouts, in, block_rows, super_rows));
  }

  DeviceTensor invperm_scratch;
  const int32_t* invperm_d = invperm_device(h, inputs, invperm_scratch, ctx);
  const auto bytes = [](int64_t elems, size_t size) { return static_cast<size_t>(elems) * size; };
  exq::cuda::DeviceBuffer wp = alloc.allocate(bytes(batch * st.wp, 4), stream);
  exq::cuda::DeviceBuffer ring = alloc.allocate(bytes(batch * st.ring, 4), stream);
  exq::cuda::DeviceBuffer e3 = alloc.allocate(bytes(batch * st.e3, 4), stream);
  exq::cuda::DeviceBuffer wq = alloc.allocate(bytes(batch * st.wq, 2), stream);
  exq::cuda::DeviceBuffer codes;
  if (want_packed) codes = alloc.allocate(bytes(batch * st.codes, 1), stream);
  exq::cuda::DeviceBuffer col_err = alloc.allocate(bytes(batch * kGptqGrid * out, 4), stream);
  exq::cuda::DeviceBuffer base = alloc.allocate(bytes(batch * out, 4), stream);
  exq::cuda::DeviceBuffer partials = alloc.allocate(bytes(batch * parts, 4), stream);
  exq::cuda::DeviceBuffer err = alloc.allocate(bytes(batch * kGptqGrid, 8), stream);
  exq::cuda::DeviceBuffer qs = alloc.allocate(bytes(batch * max_groups * out, 1), stream);
  exq::cuda::DeviceBuffer scale_max = alloc.allocate(bytes(batch * max_groups, 2), stream);
  exq::cuda::DeviceBuffer u3 = alloc.allocate(bytes(3 * super_rows * in, 4), stream);
  exq::cuda::DeviceBuffer e3_far = alloc.allocate(bytes(3 * super_rows * out, 4), stream);
  const float* u = h.u.view().data<float>();

  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    const std::vector<size_t>& ids = chunks[ci];
    const GptqBatchPlan& plan = plans[ci];
    const int count = static_cast<int>(ids.size());
    std::vector<int32_t> group_offset(ids.size());
    int32_t groups_total = 0;
    for (size_t o = 0; o < ids.size(); ++o) {
      group_offset[o] = groups_total;
      groups_total += static_cast<int32_t>(inputs.layouts[ids[o]].size());
    }
    GptqBatchBuffers b{};
    b.wp = wp.as<float>();
    b.wp_stride = st.wp;
    b.ring = ring.as<float>();
    b.ring_stride = st.ring;
    b.wq = wq.as<__half>();
    b.wq_stride = st.wq;
    b.codes = want_packed ? codes.as<uint8_t>() : nullptr;
    b.codes_stride = st.codes;
    b.qs = qs.as<uint8_t>();
    b.scale_max = scale_max.as<uint16_t>();
    b.base = base.as<float>();
    b.partials = partials.as<float>();
    b.col_err = col_err.as<float>();
    b.err = err.as<double>();
    b.in = in;
    b.out = out;
    b.parts = parts;
    b.ring_mask = 2 * super_rows - 1;
    b.count = count;

    permute_transpose_copies_cuda(w.raw(), gptq_dtype_code(w.dtype()),
                                  h.perm_d.view().data<int32_t>(), b.wp, st.wp, count, in, out,
                                  stream);
    for (const BatchBlock& block : plan.blocks) {
      for (const std::vector<BatchGroup>& groups : block.steps) {
        int max_rows = 0, active = 0;
        const GptqBatchStep step = make_step(groups, group_offset, &max_rows, &active);
        GptqPendingStep pending;
        for (const bool past_super : {false, true}) {
          const int rows = make_pending(groups, block, past_super, &pending);
          if (rows > 0) batch_pending_cuda(b, pending, u, rows, stream);
        }
        batch_scale_search_cuda(b, step, grid, stream);
        batch_rows_cuda(b, step, u, grid, max_rows, active, stream);
      }
      if (block.near_end > block.end) {  // the rest of the super-block
        const int64_t rows = block.end - block.begin, later = block.near_end - block.end;
        split_tf32_stack_cuda(u + block.begin * in + block.end, in, rows, later, u3.as<float>(),
                              true, stream);
        batch_split_errors_cuda(b, 0, count, block.begin, rows, e3.as<float>(), st.e3, stream);
        for (int o = 0; o < count; ++o)
          flush_gemm(handle, b.wp + o * st.wp + block.end * out, e3.as<float>() + o * st.e3,
                     u3.as<float>(), out, later, 3 * rows);
      }
      if (block.far) {  // every later row, from the whole super-block
        const int64_t rows = block.end - block.super_begin, later = in - block.end;
        split_tf32_stack_cuda(u + block.super_begin * in + block.end, in, rows, later,
                              u3.as<float>(), true, stream);
        for (int o = 0; o < count; ++o) {
          batch_split_errors_cuda(b, o, 1, block.super_begin, rows, e3_far.as<float>(), 0,
                                  stream);
          flush_gemm(handle, b.wp + o * st.wp + block.end * out, e3_far.as<float>(),
                     u3.as<float>(), out, later, 3 * rows);
        }
      }
    }

    // Each result as soon as it is queued, so a hook that moves it off the device keeps few.
    for (int o = 0; o < count; ++o) {
      const size_t k = ids[static_cast<size_t>(o)];
      DeviceGptqResult& r = results[k];
      r.option = options[k];
      r.weight = DeviceTensor(DType::F16, {out, in}, alloc, stream);
      unpermute_transpose_cuda(b.wq + o * st.wq, invperm_d,
                               static_cast<__half*>(r.weight.raw()), in, out, stream);
      if (want_packed) {
        io::Exl2Linear& l = r.layer;
        const std::vector<GroupSpan>& layout = inputs.layouts[k];
        const auto groups = static_cast<int64_t>(layout.size());
        l.in = in;
        l.out = out;
        l.groups = io::exl2_group_table(group_bits_rows(layout));
        if (deferred) {  // to pinned memory, read after the caller's wait
          r.packed = download_packed_async(ctx, k, in, out, groups, b.codes + o * st.codes,
                                           b.qs + group_offset[o] * out,
                                           b.scale_max + group_offset[o],
                                           h.perm_d.view().data<int32_t>());
        } else {
          l.perm = h.perm;
          l.invperm = inputs.invperm;
          l.q.resize(static_cast<size_t>(in * out));
          l.qs.resize(static_cast<size_t>(groups * out));
          l.scale_max.resize(static_cast<size_t>(groups));
          // The copies to pageable memory wait for the device anyway: the wait made explicit
          // (counted), then the copies alone (timed); both before the buffers are reused.
          if (o == 0) host_wait(ctx, "GPTQ v2 packed results");
          download_packed(ctx, l, b.codes + o * st.codes, b.qs + group_offset[o] * out,
                          b.scale_max + group_offset[o]);
        }
      }
      if (on_weight) on_weight(k, r);
    }
  }
  return results;
}

}  // namespace exq::quant::cuda
