// minitrain/io/hf_folder.hpp
// The files beside config.json and model.safetensors that make a model folder complete, so that
// transformers loads it as it is (AutoTokenizer.from_pretrained, model.generate) and llama.cpp's and
// MiniMind's converters find what they look for:
//
//   tokenizer.json           the run's tokenizer, byte for byte
//   tokenizer_config.json    PreTrainedTokenizerFast; bos / eos / pad / unk tokens, added_tokens_decoder,
//                            chat_template (MiniMind's ChatML), model_max_length (the run's max_seq_len)
//   special_tokens_map.json  the same special tokens, as transformers' save_pretrained writes them
//   generation_config.json   bos / eos / pad ids: what transformers' generate() stops on
//
// The token choices are MiniMind's tokenizer_config.json's (checked against minimind2's and minimind-3's):
// bos <|im_start|>, eos <|im_end|>, pad and unk <|endoftext|>, add_bos_token false. A tokenizer without
// one of them simply leaves that key out. The chat template is the source folder's tokenizer_config.json
// template when it has one (a fine-tune keeps its base model's), else default_chat_template.
// Field names follow transformers' tokenization_utils_base.py (tokenizer_config.json: *_token,
// added_tokens_decoder, chat_template, model_max_length, tokenizer_class) and generation/configuration_utils.py.
#pragma once

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../tokenizer/tokenizer.hpp"
#include "atomic_file.hpp"
#include "hf_config.hpp"
#include "json.hpp"

namespace minitrain {

/// ChatML, as MiniMind's tokenizer_config.json writes it without tools: a system turn (a default one when
/// the conversation has none), then <|im_start|>role\ncontent<|im_end|>\n per message.
inline const char* const default_chat_template =
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}{{- '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if not (loop.first and message['role'] == 'system') -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' }}{%- endif -%}";

/// MiniMind's special tokens, by role.
inline constexpr const char* hf_bos_token = "<|im_start|>";
inline constexpr const char* hf_eos_token = "<|im_end|>";
inline constexpr const char* hf_pad_token = "<|endoftext|>";

/// The ids of MiniMind's bos / eos / pad tokens in `tok`, where it has them.
inline HFTokenIds hf_token_ids(const Tokenizer& tok) {
    HFTokenIds ids;
    if (auto id = tok.find(hf_bos_token)) ids.bos_token_id = int(*id);
    if (auto id = tok.find(hf_eos_token)) ids.eos_token_id = int(*id);
    if (auto id = tok.find(hf_pad_token)) ids.pad_token_id = int(*id);
    return ids;
}

namespace detail {

inline void write_text_atomic(const std::filesystem::path& path, const std::string& text) {
    write_file_atomic(path, [&](std::ostream& os) { os.write(text.data(), std::streamsize(text.size())); });
}

inline std::string read_bytes(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    MT_CHECK(f, path.string(), ": cannot open for reading");
    std::ostringstream ss;
    ss << f.rdbuf();
    MT_CHECK(!f.bad(), path.string(), ": read failed");
    return ss.str();
}

/// The chat_template of DIR/tokenizer_config.json beside `tokenizer_json`, if there is one.
inline std::optional<std::string> sibling_chat_template(const std::filesystem::path& tokenizer_json) {
    const auto tc = tokenizer_json.parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (!std::filesystem::is_regular_file(tc, ec)) return std::nullopt;
    const nlohmann::json j = read_json(tc);
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string())
        return j["chat_template"].get<std::string>();
    return std::nullopt;
}

}  // namespace detail

/// tokenizer_config.json for `tok` (see the file comment).
inline nlohmann::json hf_tokenizer_config(const Tokenizer& tok, int model_max_length, const std::string& chat_template) {
    nlohmann::json j;
    j["add_bos_token"] = false;  // MiniMind never prepends one; neither does our tokenizer
    j["add_eos_token"] = false;
    j["add_prefix_space"] = tok.data().pre.add_prefix_space;
    nlohmann::json decoder = nlohmann::json::object();
    for (const auto& a : tok.data().added)
        decoder[std::to_string(a.id)] = {{"content", a.content}, {"lstrip", false}, {"normalized", false},
                                         {"rstrip", false},      {"single_word", false}, {"special", a.special}};
    j["added_tokens_decoder"] = decoder;
    j["additional_special_tokens"] = nlohmann::json::array();
    if (tok.find(hf_bos_token)) j["bos_token"] = hf_bos_token;
    if (tok.find(hf_eos_token)) j["eos_token"] = hf_eos_token;
    if (tok.find(hf_pad_token)) j["pad_token"] = j["unk_token"] = hf_pad_token;
    j["clean_up_tokenization_spaces"] = false;
    j["legacy"] = true;
    j["model_max_length"] = model_max_length;
    j["spaces_between_special_tokens"] = false;
    j["tokenizer_class"] = "PreTrainedTokenizerFast";
    j["chat_template"] = chat_template;
    return j;
}

/// special_tokens_map.json for `tok`: each of bos / eos / pad / unk it has, as an AddedToken object.
inline nlohmann::json hf_special_tokens_map(const Tokenizer& tok) {
    nlohmann::json j = nlohmann::json::object();
    auto put = [&](const char* key, const char* content) {
        if (tok.find(content))
            j[key] = {{"content", content}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}};
    };
    put("bos_token", hf_bos_token);
    put("eos_token", hf_eos_token);
    put("pad_token", hf_pad_token);
    put("unk_token", hf_pad_token);
    return j;
}

/// generation_config.json: the token ids generate() starts, stops and pads with.
inline nlohmann::json hf_generation_config(const HFTokenIds& ids) {
    nlohmann::json j;
    j["_from_model_config"] = true;
    if (ids.bos_token_id) j["bos_token_id"] = *ids.bos_token_id;
    if (ids.eos_token_id) j["eos_token_id"] = *ids.eos_token_id;
    if (ids.pad_token_id) j["pad_token_id"] = *ids.pad_token_id;
    return j;
}

/// Writes DIR/tokenizer.json (a copy of `tokenizer_json`, which must load as a Tokenizer),
/// DIR/tokenizer_config.json and DIR/special_tokens_map.json, each atomically. Copying a file onto
/// itself (DIR already holds it) is a no-op for tokenizer.json.
inline void write_tokenizer_files(const std::filesystem::path& dir, const std::filesystem::path& tokenizer_json,
                                  int model_max_length) {
    const Tokenizer tok = Tokenizer::load(tokenizer_json);
    const std::string chat_template = detail::sibling_chat_template(tokenizer_json).value_or(default_chat_template);
    std::error_code ec;
    if (!std::filesystem::equivalent(tokenizer_json, dir / "tokenizer.json", ec))
        detail::write_text_atomic(dir / "tokenizer.json", detail::read_bytes(tokenizer_json));
    detail::write_text_atomic(dir / "tokenizer_config.json",
                              hf_tokenizer_config(tok, model_max_length, chat_template).dump(2) + "\n");
    detail::write_text_atomic(dir / "special_tokens_map.json", hf_special_tokens_map(tok).dump(2) + "\n");
}

}  // namespace minitrain
