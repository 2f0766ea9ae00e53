#include "quant/cuda/engine_context.h"

#include <algorithm>

#include "backend/cpu/rotary.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "core/error.h"
#include "model/rope.h"

namespace exq::quant::cuda {
namespace {

CudaEngineOptions resolved(CudaEngineOptions o) {
  exq::cuda::require_device(o.device);
  if (o.vram_budget_bytes == 0) o.vram_budget_bytes = default_vram_budget(o.device);
  return o;
}

// Pinned slots for two rows in each direction and two more in flight: the host then never waits
// for a copy queued behind the row being computed (at least the ring's default).
int staging_slots(int64_t row_bytes) {
  const auto slot = static_cast<int64_t>(memory::cuda::StagingRing::kDefaultSlotBytes);
  const int64_t per_row = (std::max<int64_t>(row_bytes, 1) + slot - 1) / slot;
  return static_cast<int>(
      std::clamp<int64_t>(4 * per_row, memory::cuda::StagingRing::kDefaultSlots, 32));
}

}  // namespace

CusolverHandle::CusolverHandle() {
  const cusolverStatus_t status = cusolverDnCreate(&handle_);
  EXQ_CHECK(status == CUSOLVER_STATUS_SUCCESS, "cusolverDnCreate failed ({})",
            static_cast<int>(status));
}

CusolverHandle::~CusolverHandle() {
  if (handle_) cusolverDnDestroy(handle_);
}

EngineContext::EngineContext(const io::ModelConfig& c, int64_t tokens, const CudaEngineOptions& o)
    : config(c),
      max_tokens(tokens),
      options(resolved(o)),
      alloc(std::make_unique<exq::cuda::CachingAllocator>(options.vram_budget_bytes)),
      ring(memory::cuda::StagingRing::kDefaultSlotBytes,
           staging_slots(tokens * c.hidden_size * static_cast<int64_t>(sizeof(float)))) {
  EXQ_CHECK(max_tokens > 0, "cuda engine: max_tokens must be positive, got {}", max_tokens);
  const cpu::RopeTable rope = model::rope_table(c, max_tokens);
  rope_cos = exq::cuda::to_device(rope.cos.view(), *alloc, compute);
  rope_sin = exq::cuda::to_device(rope.sin.view(), *alloc, compute);
  if (c.rope_local_theta > 0.0) {
    const cpu::RopeTable local = model::rope_table(model::local_rope_config(c), max_tokens);
    rope_local_cos = exq::cuda::to_device(local.cos.view(), *alloc, compute);
    rope_local_sin = exq::cuda::to_device(local.sin.view(), *alloc, compute);
  }
  non_finite = exq::cuda::DeviceTensor(DType::U8, {16}, *alloc, compute);
  compute.synchronize();
}

void* PinnedPool::get(size_t i, size_t bytes) {
  if (buffers_.size() <= i) buffers_.resize(i + 1);
  if (buffers_[i].size() < bytes) {
    buffers_[i].reset();  // first: the old and the new buffer need not be pinned at once
    buffers_[i] = exq::cuda::PinnedBuffer(bytes);
  }
  return buffers_[i].data();
}

size_t PinnedPool::bytes() const {
  size_t total = 0;
  for (const exq::cuda::PinnedBuffer& b : buffers_) total += b.size();
  return total;
}

unsigned long long* EngineContext::output_counter() const {
  return static_cast<unsigned long long*>(non_finite.raw());
}

unsigned long long* EngineContext::input_counter() const { return output_counter() + 1; }

void EngineContext::host_sync(cudaStream_t stream, const char* why) {
  ++host_syncs;
  sync_reasons.push_back(why);
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

void EngineContext::host_sync(const exq::cuda::Event& event, const char* why) {
  ++host_syncs;
  sync_reasons.push_back(why);
  event.synchronize();
}

void EngineContext::reset_syncs() {
  host_syncs = 0;
  sync_reasons.clear();
}

void EngineContext::finish_module(const char* why) {
  exq::cuda::Event copies(false);
  ring.record(copies);
  copies.wait_on(compute);
  finish.record(compute);
  host_sync(finish, why);
  ring.flush();
}

void* EngineContext::readback(size_t bytes) {
  if (readback_.size() < bytes) {
    readback_.reset();
    readback_ = exq::cuda::PinnedBuffer(std::max<size_t>(bytes, size_t{1} << 16));
  }
  return readback_.data();
}

size_t EngineContext::persistent_bytes() const {
  using exq::cuda::CachingAllocator;
  return CachingAllocator::round_size(rope_cos.nbytes()) +
         CachingAllocator::round_size(rope_sin.nbytes()) +
         CachingAllocator::round_size(rope_local_cos.nbytes()) +
         CachingAllocator::round_size(rope_local_sin.nbytes()) +
         CachingAllocator::round_size(non_finite.nbytes());
}

}  // namespace exq::quant::cuda
