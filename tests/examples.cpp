// The preset registry the example programs share (util/presets.hpp): names to types, config.json to
// names, and the error that says which field no preset has. Only Model policies and config checks are
// instantiated here; the programs themselves are run end to end by tests/examples_e2e.cmake.
#include <doctest/doctest.h>

#include <minitrain/util/presets.hpp>

using namespace minitrain;

namespace {

/// The config.json a preset writes (vocabulary and length are run-time sizes and do not matter).
nlohmann::json config_of(std::string_view preset) {
    nlohmann::json j;
    with_preset(preset, [&]<class Net>() { j = hf_config<Net>(ModelConfig{1000, 256}); });
    return j;
}

}  // namespace

TEST_CASE("with_preset calls the lambda with the named preset's Model policy") {
    auto shape = [](std::string_view name) {
        std::vector<int> s;
        with_preset(name, [&]<class Net>() { s = {Net::layers, Net::hidden, Net::heads, Net::kv_heads, int(Net::moe)}; });
        return s;
    };
    CHECK(shape("tiny") == std::vector<int>{4, 128, 4, 2, 0});
    CHECK(shape("test") == std::vector<int>{2, 32, 4, 2, 0});
    CHECK(shape("quickstart") == std::vector<int>{4, 256, 8, 4, 0});
    CHECK(shape("minimind2-small") == std::vector<int>{8, 512, 8, 2, 0});
    CHECK(shape("minimind2-small-moe") == std::vector<int>{8, 512, 8, 2, 1});
    CHECK(shape("gpt2-small") == std::vector<int>{12, 768, 12, 12, 0});
    int calls = 0;
    CHECK_THROWS_WITH_AS(with_preset("huge", [&]<class>() { ++calls; }),
                         "unknown preset \"huge\"; the compiled presets are tiny, test, test-qknorm, test-moe3, quickstart, "
                         "minimind2-small, minimind2-small-moe, minimind3, minimind3-moe, gpt2-small",
                         Error);
    CHECK(calls == 0);
    CHECK(shape("minimind3") == std::vector<int>{8, 768, 8, 4, 0});
    CHECK(shape("minimind3-moe") == std::vector<int>{8, 768, 8, 4, 1});
    CHECK(preset_names().size() == 10);
    CHECK(preset_descriptions().find("minimind2-small-moe") != std::string::npos);
}

TEST_CASE("preset_for_config names the preset a config.json describes, whatever its vocabulary and length") {
    for (const auto& name : preset_names()) {
        INFO(name);
        CHECK(preset_for_config(config_of(name)) == name);
    }
    // A hand-written MiniMind config: HF defaults fill what is absent (num_key_value_heads would default to
    // num_attention_heads, so it must be given), and the vocabulary is another run-time size.
    nlohmann::json j = {{"hidden_size", 512},     {"intermediate_size", 1408}, {"num_hidden_layers", 8},
                        {"num_attention_heads", 8}, {"num_key_value_heads", 2}, {"vocab_size", 6400},
                        {"rms_norm_eps", 1e-5},     {"rope_theta", 1e6},         {"use_moe", true}};
    CHECK(preset_for_config(j) == "minimind2-small-moe");
    j["use_moe"] = false;
    CHECK(preset_for_config(j) == "minimind2-small");

    // MiniMind-3 as MiniMind's scripts/convert_model.py writes it: Qwen3Config's to_dict (transformers 4.x keys).
    nlohmann::json q = {{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"}, {"vocab_size", 6400},
                        {"hidden_size", 768}, {"intermediate_size", 2432}, {"num_hidden_layers", 8},
                        {"num_attention_heads", 8}, {"num_key_value_heads", 4}, {"head_dim", 96},
                        {"max_position_embeddings", 32768}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1e6},
                        {"tie_word_embeddings", true}, {"use_sliding_window", false}, {"sliding_window", nullptr},
                        {"max_window_layers", 28}, {"attention_bias", false}, {"attention_dropout", 0.0},
                        {"hidden_act", "silu"}, {"torch_dtype", "float16"}, {"transformers_version", "4.57.1"},
                        {"use_cache", true}, {"initializer_range", 0.02}, {"rope_scaling", nullptr},
                        {"bos_token_id", 1}, {"eos_token_id", 2}};
    CHECK(preset_for_config(q) == "minimind3");
    // ... and MiniMind-3-MoE: Qwen3MoeConfig with its defaults for what the script does not pass.
    q["architectures"] = {"Qwen3MoeForCausalLM"};
    q["model_type"] = "qwen3_moe";
    q.update({{"num_experts", 4}, {"num_experts_per_tok", 1}, {"moe_intermediate_size", 2432}, {"norm_topk_prob", true},
              {"router_aux_loss_coef", 0.001}, {"decoder_sparse_step", 1}, {"mlp_only_layers", nlohmann::json::array()}});
    CHECK(preset_for_config(q) == "minimind3-moe");
    q["architectures"] = {"Qwen2ForCausalLM"};
    CHECK_THROWS_WITH_AS(preset_for_config(q), doctest::Contains("architectures is [\"Qwen2ForCausalLM\"]: minitrain "
                                                                 "implements only"), Error);
}

TEST_CASE("config.json names its preset; the quickstart's model is a preset") {
    // What the quickstart trains (examples/quickstart.cpp) loads in every program: generate and chat once
    // refused it ("hidden_size is 256; no compiled preset has that").
    CHECK(std::string(preset_name<QuickstartModel>()) == "quickstart");
    CHECK(std::string(preset_name<Model<3, 64, 4, false, Knobs<2>>>()).empty());
    nlohmann::json j = hf_config<QuickstartModel>(ModelConfig{2048, 128});
    CHECK(j.at("minitrain").at("preset") == "quickstart");
    CHECK(preset_for_config(j) == "quickstart");
    j["minitrain"].erase("preset");  // a folder written before the name was recorded: found by its shape
    CHECK(preset_for_config(j) == "quickstart");
    CHECK(!hf_config<Model<3, 64, 4, false, Knobs<2>>>(ModelConfig{}).at("minitrain").contains("preset"));
    // A preset another build registered, absent here: the error says so and how to add it.
    nlohmann::json other = hf_config<Model<3, 64, 4, false, Knobs<2>>>(ModelConfig{});
    other["minitrain"]["preset"] = "my3";
    CHECK_THROWS_WITH_AS(preset_for_config(other, "m/config.json"),
                         doctest::Contains("m/config.json: the model was trained as preset \"my3\", which this program was "
                                           "not compiled with (the compiled presets are tiny, test, test-qknorm, test-moe3, quickstart"),
                         Error);
    // A name that disagrees with the architecture loses to the architecture.
    j = hf_config<TinyModel>(ModelConfig{});
    j["minitrain"]["preset"] = "tiny";
    CHECK(preset_for_config(j) == "test");
}

TEST_CASE("a config.json that matches no preset: the field no preset has, with every preset's value") {
    nlohmann::json j = config_of("minimind2-small");
    j["num_hidden_layers"] = 6;
    CHECK_THROWS_WITH_AS(preset_for_config(j, "run/final/config.json"),
                         "run/final/config.json: num_hidden_layers is 6; no compiled preset has that (tiny has 4, "
                         "test has 2, test-qknorm has 2, test-moe3 has 2, quickstart has 4, minimind2-small has 8, minimind2-small-moe has 8, "
                         "minimind3 has 8, minimind3-moe has 8, gpt2-small has 12)",
                         Error);

    j = config_of("minimind2-small");
    j["num_key_value_heads"] = 1;  // (the quickstart preset has 4)
    CHECK_THROWS_WITH_AS(preset_for_config(j), doctest::Contains("config.json: num_key_value_heads is 1; no compiled preset "
                                                                 "has that (tiny has 2, test has 2, test-qknorm has 2, test-moe3 has 2, quickstart has 4, "
                                                                 "minimind2-small has 2"),
                         Error);

    // A value some preset has, in a config that is closest to another preset: name the closest and the key.
    j = config_of("minimind2-small");
    j["num_hidden_layers"] = 2;  // test has 2 layers, but nothing else of test's
    CHECK_THROWS_WITH_AS(preset_for_config(j),
                         "config.json: no compiled preset matches; the closest is minimind2-small, where "
                         "num_hidden_layers is 2, the compiled model has 8",
                         Error);

    // The MoE preset is closest to an MoE config; the field that differs is an MoE key.
    j = config_of("minimind2-small-moe");
    j["n_routed_experts"] = 8;
    CHECK_THROWS_WITH_AS(preset_for_config(j), doctest::Contains("n_routed_experts is 8; no compiled preset has that "
                                                                 "(tiny has no n_routed_experts"),
                         Error);

    // What no preset can fix (another architecture, a malformed value) is config_mismatch's own sentence.
    j = config_of("test");
    j["model_type"] = "gpt2";
    CHECK_THROWS_WITH_AS(preset_for_config(j), doctest::Contains("model_type is \"gpt2\", minitrain implements only"), Error);
    j = config_of("test");
    j["model_type"] = "gpt2";
    j["num_hidden_layers"] = 6;
    CHECK_THROWS_WITH_AS(preset_for_config(j), doctest::Contains("model_type is \"gpt2\", minitrain implements only"), Error);
    j = config_of("test");
    j["hidden_size"] = "32";
    CHECK_THROWS_WITH_AS(preset_for_config(j), doctest::Contains("hidden_size must be an integer"), Error);
    j = config_of("test");
    j.erase("num_hidden_layers");
    CHECK_THROWS_WITH_AS(preset_for_config(j), doctest::Contains("num_hidden_layers is missing (it is required)"), Error);
    j = config_of("minimind2-small-moe");
    j["use_moe"] = false;
    j["num_hidden_layers"] = 2;  // closest: minimind2-small (use_moe agrees), which differs in the layers only
    CHECK_THROWS_WITH_AS(preset_for_config(j), doctest::Contains("the closest is minimind2-small, where num_hidden_layers"),
                         Error);
    CHECK_THROWS_WITH_AS(preset_for_config(nlohmann::json::array()), doctest::Contains("must be a JSON object"), Error);
}

TEST_CASE("preset_for_folder: reads DIR/config.json, and points at final/ or a checkpoint for a run folder") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("minitrain_presets_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir / "final");
    {
        std::ofstream(dir / "final" / "config.json") << config_of("tiny").dump();
    }
    CHECK(preset_for_folder(dir / "final") == "tiny");
    CHECK_THROWS_WITH_AS(preset_for_folder(dir), doctest::Contains("config.json: no such file"), Error);
    CHECK_THROWS_WITH_AS(preset_for_folder(dir), doctest::Contains("the run's final model is in"), Error);
    {
        std::ofstream(dir / "final" / "config.json") << "{ not json";
    }
    CHECK_THROWS_WITH_AS(preset_for_folder(dir / "final"), doctest::Contains("not valid JSON"), Error);
    fs::remove_all(dir);
}
