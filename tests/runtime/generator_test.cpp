// Generation loop against a scripted fake model: stop ids, token limit, full context,
// streaming of whole UTF-8 characters, and the prefill / single-token call pattern.
#include "runtime/generator.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "core/error.h"

namespace exq::runtime {
namespace {

constexpr int kVocab = 16;

// Emits script[i] as the argmax after the i-th generated position; records every call.
class FakeModel : public StepFunction {
 public:
  FakeModel(std::vector<int32_t> script, int64_t max_context)
      : script_(std::move(script)), max_context_(max_context), logits_(kVocab) {}

  std::span<const float> forward(std::span<const int32_t> tokens) override {
    calls.emplace_back(tokens.begin(), tokens.end());
    position_ += static_cast<int64_t>(tokens.size());
    if (position_ > max_context_) throw Error("fake: context overflow");
    std::fill(logits_.begin(), logits_.end(), 0.0f);
    const int32_t next = step_ < script_.size() ? script_[step_] : 7;
    ++step_;
    logits_[static_cast<size_t>(next)] = 10.0f;
    return logits_;
  }
  int64_t position() const override { return position_; }
  int64_t max_context() const override { return max_context_; }
  void reset() override {
    position_ = 0;
    step_ = 0;
  }
  void truncate(int64_t n) override { position_ = n; }

  std::vector<std::vector<int32_t>> calls;

 private:
  std::vector<int32_t> script_;
  int64_t max_context_;
  int64_t position_ = 0;
  size_t step_ = 0;
  std::vector<float> logits_;
};

// Maps ids to raw bytes; "€" (E2 82 AC) and "😀" (F0 9F 98 80) are split across tokens.
class FakeDecoder : public TextDecoder {
 public:
  std::string push(int32_t id) override { return table().at(id); }
  std::string finish() override { return {}; }
  void reset() override {}
  static const std::map<int32_t, std::string>& table() {
    static const std::map<int32_t, std::string> t = {
        {3, "a"},        {4, "\xE2\x82"}, {5, "\xAC!"},  {6, " b"},       {7, "."},
        {8, "\xF0"},     {9, "\x9F"},     {10, "\x98"},  {11, "\x80 c"},  {12, ""},
    };
    return t;
  }
};

GenerateOptions greedy_options(int64_t max_new, std::vector<int32_t> eos = {2}) {
  GenerateOptions o;
  o.max_new_tokens = max_new;
  o.eos_token_ids = std::move(eos);
  o.sampler.temperature = 0.0f;
  return o;
}

bool whole_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

TEST(Generator, StopsOnEosAndKeepsIt) {
  FakeModel model({3, 6, 7, 2, 6, 6}, 100);
  FakeDecoder dec;
  const std::vector<int32_t> prompt = {1, 3, 3};
  const auto r = generate(model, &dec, prompt, greedy_options(50));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 6, 7, 2}));
  EXPECT_EQ(r.stop, StopReason::Eos);
  EXPECT_EQ(r.text, "a b.");
  EXPECT_EQ(r.prompt_tokens, 3);
  EXPECT_EQ(r.generated_tokens, 4);
  // One prefill call with the whole prompt, then one call per fed-back token (not the eos).
  ASSERT_EQ(model.calls.size(), 4u);
  EXPECT_EQ(model.calls[0], prompt);
  EXPECT_EQ(model.calls[1], std::vector<int32_t>{3});
  EXPECT_EQ(model.calls[2], std::vector<int32_t>{6});
  EXPECT_EQ(model.calls[3], std::vector<int32_t>{7});
  EXPECT_EQ(r.decode_steps, 3);
}

TEST(Generator, AnyOfSeveralEosIdsStops) {
  FakeModel model({3, 6, 0, 7}, 100);
  const std::vector<int32_t> prompt = {1};
  const auto r = generate(model, nullptr, prompt, greedy_options(50, {2, 0}));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 6, 0}));
  EXPECT_EQ(r.stop, StopReason::Eos);
}

TEST(Generator, StopsAtMaxTokens) {
  FakeModel model({3, 6, 7, 6, 2}, 100);
  FakeDecoder dec;
  const std::vector<int32_t> prompt = {1};
  const auto r = generate(model, &dec, prompt, greedy_options(2));
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 6}));
  EXPECT_EQ(r.stop, StopReason::MaxTokens);
  EXPECT_EQ(r.text, "a b");
  EXPECT_EQ(model.calls.size(), 2u);  // the last token is not fed back
  EXPECT_EQ(r.decode_steps, 1);

  FakeModel again({3}, 100);
  const auto none = generate(again, &dec, prompt, greedy_options(0));
  EXPECT_TRUE(none.ids.empty());
  EXPECT_TRUE(again.calls.empty());
}

TEST(Generator, StopsWhenContextIsFull) {
  // Context 5, prompt 2: tokens 1..3 are fed back (positions 2, 3, 4), the 4th is sampled
  // from the full context and generation stops there.
  FakeModel model({3, 3, 3, 3, 3, 3}, 5);
  const std::vector<int32_t> prompt = {1, 1};
  const auto r = generate(model, nullptr, prompt, greedy_options(50));
  EXPECT_EQ(r.ids.size(), 4u);
  EXPECT_EQ(r.stop, StopReason::ContextFull);
  EXPECT_EQ(model.position(), 5);
}

TEST(Generator, RejectsPromptsThatDoNotFit) {
  FakeModel model({3}, 4);
  EXPECT_THROW(generate(model, nullptr, std::vector<int32_t>{1, 1, 1, 1, 1}, greedy_options(5)), Error);
  EXPECT_THROW(generate(model, nullptr, std::vector<int32_t>{}, greedy_options(5)), Error);
  // A prompt exactly filling the context still yields one token.
  const auto r = generate(model, nullptr, std::vector<int32_t>{1, 1, 1, 1}, greedy_options(5));
  EXPECT_EQ(r.ids, std::vector<int32_t>{3});
  EXPECT_EQ(r.stop, StopReason::ContextFull);
}

TEST(Generator, StreamsWholeUtf8Characters) {
  // "a€! b😀 c." with both multi-byte characters split over several tokens.
  FakeModel model({3, 4, 5, 6, 8, 9, 10, 11, 12, 7, 2}, 100);
  FakeDecoder dec;
  std::vector<std::string> pieces;
  const auto r = generate(model, &dec, std::vector<int32_t>{1}, greedy_options(50),
                          [&](std::string_view s) {
                            pieces.emplace_back(s);
                            return true;
                          });
  EXPECT_EQ(r.text, "a\xE2\x82\xAC! b\xF0\x9F\x98\x80 c.");
  std::string joined;
  for (const auto& p : pieces) {
    EXPECT_FALSE(p.empty());
    EXPECT_TRUE(whole_utf8(p)) << "piece splits a character";
    joined += p;
  }
  EXPECT_EQ(joined, r.text);
  // Pieces: "a", "€!", " b", "😀 c", "." (nothing emitted while a character is incomplete).
  EXPECT_EQ(pieces.size(), 5u);
}

TEST(Generator, IncompleteCharacterAtEndBecomesReplacement) {
  FakeModel model({3, 8, 9}, 100);
  FakeDecoder dec;
  std::string joined;
  const auto r = generate(model, &dec, std::vector<int32_t>{1}, greedy_options(3), [&](std::string_view s) {
    joined += s;
    return true;
  });
  EXPECT_EQ(r.text, "a\xEF\xBF\xBD");
  EXPECT_EQ(joined, r.text);
}

TEST(Generator, CallbackCanStop) {
  FakeModel model({3, 6, 7, 6, 7, 2}, 100);
  FakeDecoder dec;
  int calls = 0;
  const auto r = generate(model, &dec, std::vector<int32_t>{1}, greedy_options(50), [&](std::string_view) {
    return ++calls < 2;
  });
  EXPECT_EQ(r.stop, StopReason::Callback);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{3, 6}));
}

TEST(Generator, SeededSamplingIsReproducible) {
  // Flat logits: every token equally likely, so the ids depend only on the seed.
  class Flat : public StepFunction {
   public:
    std::span<const float> forward(std::span<const int32_t> t) override {
      pos_ += static_cast<int64_t>(t.size());
      return logits_;
    }
    int64_t position() const override { return pos_; }
    int64_t max_context() const override { return 1000; }
    void reset() override { pos_ = 0; }
    void truncate(int64_t n) override { pos_ = n; }

   private:
    int64_t pos_ = 0;
    std::vector<float> logits_ = std::vector<float>(kVocab, 0.0f);
  };
  auto run = [](uint64_t seed) {
    Flat m;
    GenerateOptions o;
    o.max_new_tokens = 30;
    o.sampler.top_k = 0;
    o.sampler.top_p = 1.0f;
    o.sampler.min_p = 0.0f;
    o.sampler.temperature = 1.0f;
    o.sampler.seed = seed;
    const auto r = generate(m, nullptr, std::vector<int32_t>{1}, o);
    EXPECT_EQ(r.seed, seed);
    return r.ids;
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

TEST(Utf8Stream, HoldsBackPartialSequences) {
  Utf8Stream s;
  EXPECT_EQ(s.push("x\xF0"), "x");
  EXPECT_EQ(s.push("\x9F"), "");
  EXPECT_EQ(s.push("\x98"), "");
  EXPECT_EQ(s.push("\x80y"), "\xF0\x9F\x98\x80y");
  EXPECT_EQ(s.push("\xC3"), "");
  EXPECT_EQ(s.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(s.finish(), "");
  EXPECT_EQ(utf8_complete_prefix("ab\xE2\x82"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xE2\x82\xAC"), 5u);
  EXPECT_EQ(utf8_complete_prefix(""), 0u);
}

}  // namespace
}  // namespace exq::runtime
