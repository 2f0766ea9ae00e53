#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "chat/template.h"
#include "render_cases.h"

namespace exq::chat {
namespace {

using test::RenderCase;

class RenderCaseTest : public ::testing::TestWithParam<RenderCase> {};

TEST_P(RenderCaseTest, MatchesHandDerivedOutput) {
  const RenderCase& c = GetParam();
  const Template t(c.tmpl);
  EXPECT_EQ(t.render(nlohmann::ordered_json::parse(c.ctx)), std::string(c.want)) << "template: " << c.tmpl;
}

std::string case_name(const ::testing::TestParamInfo<RenderCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Literals, RenderCaseTest, ::testing::ValuesIn(test::kLiteralCases), case_name);
INSTANTIATE_TEST_SUITE_P(Operators, RenderCaseTest, ::testing::ValuesIn(test::kOperatorCases), case_name);
INSTANTIATE_TEST_SUITE_P(Access, RenderCaseTest, ::testing::ValuesIn(test::kAccessCases), case_name);
INSTANTIATE_TEST_SUITE_P(Filters, RenderCaseTest, ::testing::ValuesIn(test::kFilterCases), case_name);
INSTANTIATE_TEST_SUITE_P(Tests, RenderCaseTest, ::testing::ValuesIn(test::kTestCases), case_name);
INSTANTIATE_TEST_SUITE_P(Methods, RenderCaseTest, ::testing::ValuesIn(test::kMethodCases), case_name);
INSTANTIATE_TEST_SUITE_P(Statements, RenderCaseTest, ::testing::ValuesIn(test::kStatementCases), case_name);
INSTANTIATE_TEST_SUITE_P(Whitespace, RenderCaseTest, ::testing::ValuesIn(test::kWhitespaceCases), case_name);

}  // namespace
}  // namespace exq::chat
