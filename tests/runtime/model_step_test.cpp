// The real adapters: streaming through SmolLM2's tokenizer (fixture ids replayed by a
// scripted model), stop ids, and greedy generation on the real model against greedy.json.
#include "runtime/model_step.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "core/error.h"
#include "grammar/json_schema.h"
#include "io/hf_config.h"
#include "runtime/draft_model.h"
#include "test_support.h"

namespace exq::runtime {
namespace {

using nlohmann::json;

std::filesystem::path smollm2_dir() { return test::shared_dir() / "models" / "smollm2-135m-instruct"; }

// Replays fixed ids as one-hot logits.
class Replay : public StepFunction {
 public:
  Replay(std::vector<int32_t> ids, int64_t vocab) : ids_(std::move(ids)), logits_(static_cast<size_t>(vocab)) {}
  std::span<const float> forward(std::span<const int32_t> t) override {
    pos_ += static_cast<int64_t>(t.size());
    std::fill(logits_.begin(), logits_.end(), 0.0f);
    logits_[static_cast<size_t>(ids_[next_++])] = 1.0f;
    return logits_;
  }
  int64_t position() const override { return pos_; }
  int64_t max_context() const override { return 1 << 20; }
  void reset() override { pos_ = 0; }
  void truncate(int64_t n) override { pos_ = n; }

 private:
  std::vector<int32_t> ids_;
  std::vector<float> logits_;
  int64_t pos_ = 0;
  size_t next_ = 0;
};

TEST(ModelStep, StreamsTokenizerTextInWholeCharacters) {
  const auto tok = tokenizer::Tokenizer::from_file(smollm2_dir() / "tokenizer.json");
  std::ifstream cases(test::shared_dir() / "fixtures" / "smollm2" / "tokenizer_cases.jsonl");
  int tested = 0;
  for (std::string line; std::getline(cases, line) && tested < 16;) {
    const json c = json::parse(line);
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    if (ids.empty() || tok.decode(ids, true) != tok.decode(ids, false)) continue;  // no special tokens
    ++tested;
    Replay model(ids, tok.vocab_size());
    TokenizerTextDecoder decoder(tok);
    GenerateOptions o;
    o.max_new_tokens = static_cast<int64_t>(ids.size());
    o.sampler.temperature = 0.0f;
    std::string joined;
    const auto r = generate(model, &decoder, std::vector<int32_t>{0}, o, [&](std::string_view piece) {
      // Each piece is whole characters: the UTF-8 guard would hold back anything else.
      EXPECT_EQ(utf8_complete_prefix(piece), piece.size());
      joined += piece;
      return true;
    });
    EXPECT_EQ(r.ids, ids);
    EXPECT_EQ(joined, c["decoded"].get<std::string>()) << c["text"];
    EXPECT_EQ(r.text, joined);
  }
  EXPECT_GE(tested, 10);
}

// DRY's breakers through SmolLM2's tokenizer: the last token of "a" + the text.
TEST(ModelStep, DryBreakersAreTokenIds) {
  const auto tok = tokenizer::Tokenizer::from_file(smollm2_dir() / "tokenizer.json");
  const std::vector<int32_t> ids = dry_breaker_ids(tok, default_dry_breakers());
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], *tok.token_to_id("\u010a"));  // byte-level newline
  EXPECT_EQ(ids[1], *tok.token_to_id(":"));
  EXPECT_EQ(ids[2], *tok.token_to_id("\""));
  EXPECT_EQ(ids[3], *tok.token_to_id("*"));
  EXPECT_TRUE(dry_breaker_ids(tok, std::vector<std::string>{""}).empty());
}

TEST(ModelStep, StopIdsFromEveryConfig) {
  const auto tok = tokenizer::Tokenizer::from_file(smollm2_dir() / "tokenizer.json");
  const auto config = io::load_model_config(smollm2_dir());
  GenerationConfig gen;
  gen.eos_token_ids = {7, 2};
  EXPECT_EQ(stop_token_ids(gen, config, tok, "<|endoftext|>"), (std::vector<int32_t>{7, 2, 0}));
  EXPECT_EQ(stop_token_ids(load_generation_config(smollm2_dir()), config, tok, "<|im_end|>"),
            std::vector<int32_t>{2});
  EXPECT_EQ(stop_token_ids({}, config, tok, "not-a-token"), std::vector<int32_t>{2});
}

TEST(ModelStep, RealModelGreedyMatchesFixture) {
  EXQ_REQUIRE_MODEL();
  auto model = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const json cases = json::parse(test::read_file(test::shared_dir() / "fixtures" / "smollm2" / "greedy.json"));
  for (const auto& c : cases) {
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto want = c["greedy_ids"].get<std::vector<int32_t>>();
    GenerateOptions o;
    o.max_new_tokens = static_cast<int64_t>(want.size()) + 4;
    o.eos_token_ids = {2};
    o.sampler.temperature = 0.0f;
    std::string streamed;
    const auto r = generate_text(model, tok, prompt, o, [&](std::string_view s) {
      streamed += s;
      return true;
    });
    EXPECT_EQ(r.ids, want);
    EXPECT_EQ(r.stop, StopReason::Eos);
    EXPECT_EQ(r.prompt_tokens, static_cast<int64_t>(prompt.size()));
    EXPECT_EQ(r.decode_steps, static_cast<int64_t>(want.size()) - 1);
    EXPECT_EQ(streamed, r.text);
    EXPECT_EQ(r.text + "<|im_end|>", c["text"].get<std::string>());
    EXPECT_GT(r.prefill_tokens_per_s(), 0.0);
    EXPECT_GT(r.decode_tokens_per_s(), 0.0);
    // With the answer itself as a prediction, most tokens come from checked drafts and the
    // greedy tokens stay transformers'.
    o.draft.max_tokens = 7;
    o.prediction = want;
    const auto p = generate_text(model, tok, prompt, o);
    EXPECT_EQ(p.ids, want);
    EXPECT_GE(p.accepted_draft_tokens, static_cast<int64_t>(want.size()) / 2);
  }
}

TEST(ModelStep, RealModelMaxTokensAndContext) {
  EXQ_REQUIRE_MODEL();
  auto model = model::LlamaModel::load(test::test_model());
  const std::vector<int32_t> prompt = {1, 4093, 198, 19161, 253};
  // A step with room for 3 more tokens: 4 generated, the last from the full context.
  LlamaStep step(model, static_cast<int64_t>(prompt.size()) + 3);
  GenerateOptions o;
  o.max_new_tokens = 100;
  o.sampler.temperature = 0.0f;
  const auto r = generate(step, nullptr, prompt, o);
  EXPECT_EQ(r.stop, StopReason::ContextFull);
  EXPECT_EQ(r.ids.size(), 4u);
  EXPECT_EQ(step.position(), step.max_context());
  // Out-of-vocabulary prompt ids are a user error, not a crash.
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  EXPECT_THROW(generate_text(model, tok, std::vector<int32_t>{1, 60000}, o), Error);
}

// A session's next turn keeps the prefix its context holds and runs the rest: the same tokens
// as a fresh context (greedy, and with a repetition penalty, which must see the cached prompt).
TEST(ModelStep, RealModelSessionReusesThePromptPrefix) {
  EXQ_REQUIRE_MODEL();
  auto model = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  for (const float penalty : {1.0f, 1.3f}) {
    LlamaSession session(model, tok, 256);
    GenerateOptions o;
    o.max_new_tokens = 12;
    o.sampler.temperature = 0.0f;
    o.sampler.repetition_penalty = penalty;
    const std::vector<int32_t> p1 = tok.encode("The three primary colours are", true);
    const GenerateResult r1 = session.generate(p1, o, true);
    ASSERT_EQ(r1.ids.size(), 12u);
    EXPECT_EQ(r1.cached_tokens, 0);
    EXPECT_EQ(r1.ids, generate_text(model, tok, p1, o).ids);

    std::vector<int32_t> p2 = p1;
    p2.insert(p2.end(), r1.ids.begin(), r1.ids.end());
    const std::vector<int32_t> more = tok.encode(" In painting, they", false);
    p2.insert(p2.end(), more.begin(), more.end());
    const GenerateResult r2 = session.generate(p2, o, true);
    EXPECT_EQ(r2.cached_tokens, static_cast<int64_t>(p1.size() + r1.ids.size()) - 1) << "penalty " << penalty;
    const GenerateResult want = generate_text(model, tok, p2, o);
    EXPECT_EQ(r2.ids, want.ids) << "penalty " << penalty;
    EXPECT_EQ(r2.text, want.text);
    EXPECT_EQ(session.context_tokens().size(), p2.size() + r2.ids.size() - 1);

    const GenerateResult r3 = session.generate(p2, o, false);  // no reuse: all of it runs again
    EXPECT_EQ(r3.cached_tokens, 0);
    EXPECT_EQ(r3.ids, want.ids);
  }
}

// Prompt-lookup drafts on the real model: a text that repeats what the prompt holds keeps most
// drafts, and the greedy tokens are those of single-token steps (a several-token pass rounds
// differently, but not enough to change an argmax here). With a fixed seed the sampled tokens
// match as well: each is one draw from the same stream.
TEST(ModelStep, RealModelDraftsGiveTheSameTokens) {
  EXQ_REQUIRE_MODEL();
  auto model = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const std::vector<int32_t> prompt = tok.encode(
      "Copy the list.\nList: red apple, yellow banana, dark cherry, sweet date, wild elderberry, green fig.\n"
      "Copy: red apple, yellow banana,",
      true);
  for (const float temperature : {0.0f, 0.6f}) {
    GenerateOptions o;
    o.max_new_tokens = 24;
    o.sampler.temperature = temperature;
    o.sampler.seed = 7;
    const GenerateResult plain = generate_text(model, tok, prompt, o);
    o.draft.max_tokens = 6;
    const GenerateResult spec = generate_text(model, tok, prompt, o);
    EXPECT_EQ(spec.ids, plain.ids) << "temperature " << temperature;
    EXPECT_EQ(spec.text, plain.text);
    EXPECT_GE(spec.accepted_draft_tokens, 5) << spec.text;
    EXPECT_EQ(spec.decode_steps + spec.accepted_draft_tokens, plain.decode_steps);
  }
}

// A draft model on the real model: SmolLM2 drafting for itself (a second KV cache over the same
// weights) guesses what single-token steps give, so nearly every guess is kept; the tokens,
// greedy or sampled with a seed, are those of a generation without drafts. With p_min the draft
// stops at its unsure tokens: fewer guesses, a larger share of them kept.
TEST(ModelStep, RealModelDraftModelGivesTheSameTokens) {
  EXQ_REQUIRE_MODEL();
  auto model = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const std::vector<int32_t> prompt = tok.encode("The history of the printing press begins", true);
  const int64_t vocab = model.config().vocab_size;
  for (const float temperature : {0.0f, 0.7f}) {
    SCOPED_TRACE(testing::Message() << "temperature " << temperature);
    GenerateOptions o;
    o.max_new_tokens = 40;
    o.sampler.temperature = temperature;
    o.sampler.seed = 11;
    const GenerateResult plain = generate_text(model, tok, prompt, o);
    LlamaStep draft_step(model, 128);
    StepDraftModel draft(draft_step, vocab);
    o.draft.max_tokens = 6;
    o.draft.model = &draft;
    o.draft.p_min = 0.0f;
    const GenerateResult spec = generate_text(model, tok, prompt, o);
    EXPECT_EQ(spec.ids, plain.ids);
    EXPECT_EQ(spec.text, plain.text);
    EXPECT_EQ(spec.decode_steps + spec.accepted_draft_tokens, plain.decode_steps);
    if (temperature == 0.0f) {
      EXPECT_GE(spec.accepted_draft_tokens * 10, spec.draft_tokens * 9) << spec.accepted_draft_tokens << " of "
                                                                         << spec.draft_tokens;
      EXPECT_LE(spec.decode_steps, 12);
      o.draft.p_min = 0.9f;
      const GenerateResult sure = generate_text(model, tok, prompt, o);
      EXPECT_EQ(sure.ids, plain.ids);
      EXPECT_LT(sure.draft_tokens, spec.draft_tokens);
      EXPECT_EQ(sure.accepted_draft_tokens, sure.draft_tokens);
    }
  }
}

// SmolLM2 asked for a JSON object in a schema: the text parses, has the schema's fields and types
// in its order, and ends where the grammar ends; drafts (the grammar advancing by several
// tokens in one pass) give the same tokens.
TEST(ModelStep, RealModelAnswersInAJsonSchema) {
  EXQ_REQUIRE_MODEL();
  auto model = model::LlamaModel::load(test::test_model());
  const auto tok = tokenizer::Tokenizer::from_file(test::test_model() / "tokenizer.json");
  const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(R"({
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0},
                   "city": {"type": "string", "enum": ["Paris", "London", "Rome"]}},
    "required": ["name", "age", "city"], "additionalProperties": false})");
  const std::vector<int32_t> prompt =
      tok.encode("Describe Marie, a 34-year-old woman from Paris, as JSON with name, age and city:\n", true);
  for (const float temperature : {0.0f, 0.7f}) {
    GenerateOptions o;
    o.max_new_tokens = 60;
    o.sampler.temperature = temperature;
    o.sampler.seed = 3;
    o.grammar = grammar::Grammar::parse(grammar::json_schema_to_gbnf(schema));
    o.grammar_vocab = TokenVocab::from_tokenizer(tok, model.config().vocab_size);
    const GenerateResult r = generate_text(model, tok, prompt, o);
    EXPECT_EQ(r.stop, StopReason::Grammar) << r.text;
    const nlohmann::ordered_json j = nlohmann::ordered_json::parse(r.text);
    ASSERT_TRUE(j.is_object()) << r.text;
    ASSERT_EQ(j.size(), 3u) << r.text;
    EXPECT_EQ(j.begin().key(), "name");
    EXPECT_TRUE(j["name"].is_string() && j["name"].get<std::string>().size() <= 20) << r.text;
    EXPECT_TRUE(j["age"].is_number_integer() && j["age"].get<int64_t>() >= 0) << r.text;
    const std::string city = j["city"].get<std::string>();
    EXPECT_TRUE(city == "Paris" || city == "London" || city == "Rome") << r.text;
    if (temperature == 0.0f) {
      EXPECT_EQ(j["city"], "Paris") << r.text;
    }
    o.draft.max_tokens = 4;
    EXPECT_EQ(generate_text(model, tok, prompt, o).ids, r.ids) << "temperature " << temperature;
    std::printf("[json schema, temperature %.1f] %s\n", temperature, r.text.c_str());
  }
}

}  // namespace
}  // namespace exq::runtime
