// Embedding gather on the GPU against a CPU loop; conversion to f32 is exact, so results are.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "backend/cuda/embedding.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

class Embedding : public CudaTest {};

class EmbeddingDtypes : public CudaTest, public ::testing::WithParamInterface<DType> {};

TEST_P(EmbeddingDtypes, MatchesCpuExactly) {
  const DType dtype = GetParam();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1000, 576}, {37, 13}, {5, 1}};
  uint32_t seed = 3;
  for (auto [vocab, dim] : shapes) {
    const Tensor table = dtype == DType::F32 ? test::random_f32({vocab, dim}, seed++)
                                             : test::random_half(dtype, {vocab, dim}, seed++);
    std::vector<int32_t> id_list = {0, static_cast<int32_t>(vocab - 1), 1, 0,
                                    static_cast<int32_t>(vocab / 2)};
    for (int i = 0; i < 20; ++i) id_list.push_back(static_cast<int32_t>((i * 7919) % vocab));
    Tensor ids(DType::I32, {static_cast<int64_t>(id_list.size())});
    std::copy(id_list.begin(), id_list.end(), ids.data<int32_t>());
    DeviceTensor dt = upload(table), di = upload(ids);
    DeviceTensor dout = empty(DType::F32, {ids.dim(0), dim});
    embedding(di, dt, dout, stream());
    std::vector<double> want;
    for (int32_t id : id_list)
      for (int64_t d = 0; d < dim; ++d) want.push_back(test::value_at(table, id * dim + d));
    test::expect_close(want, download(dout), 0.0, 0.0, "embedding " + shape_str(table.shape()));
  }
}

INSTANTIATE_TEST_SUITE_P(TableDtypes, EmbeddingDtypes,
                         ::testing::Values(DType::F16, DType::BF16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST_F(Embedding, OutOfRangeIdGivesNaNRow) {
  const Tensor table = test::random_half(DType::F16, {10, 8}, 5);
  Tensor ids(DType::I32, {3});
  ids.data<int32_t>()[0] = 2;
  ids.data<int32_t>()[1] = 10;
  ids.data<int32_t>()[2] = -1;
  DeviceTensor dt = upload(table), di = upload(ids), dout = empty(DType::F32, {3, 8});
  embedding(di, dt, dout, stream());
  const Tensor out = download(dout);
  for (int d = 0; d < 8; ++d) {
    EXPECT_EQ(out.data<float>()[d], half_to_float(table.data<uint16_t>()[16 + d]));
    EXPECT_TRUE(std::isnan(out.data<float>()[8 + d]));
    EXPECT_TRUE(std::isnan(out.data<float>()[16 + d]));
  }
}

TEST(EmbeddingArgs, RejectBadShapes) {
  using test::fake_view;
  test::expect_error([] { embedding(fake_view(DType::I32, {4}), fake_view(DType::F16, {100, 8}),
                                    fake_view(DType::F32, {4, 9}), nullptr); },
                     "out must have shape [4, 8]");
  test::expect_error([] { embedding(fake_view(DType::I8, {4}), fake_view(DType::F16, {100, 8}),
                                    fake_view(DType::F32, {4, 8}), nullptr); },
                     "ids must be I32");
  test::expect_error([] { embedding(fake_view(DType::I32, {4}), fake_view(DType::U8, {100, 8}),
                                    fake_view(DType::F32, {4, 8}), nullptr); },
                     "table dtype U8 is not supported");
}

}  // namespace
}  // namespace exq::cuda
