// minitrain/io/checkpoint.hpp
// Model folders and training checkpoints.
//
//   save_pretrained / load_pretrained    a Hugging Face model folder: config.json (Llama or Qwen3 naming,
//                                        torch_dtype, token ids), model.safetensors (HF parameter names,
//                                        F32 / BF16 / F16, lm_head tied and not stored),
//                                        generation_config.json and, given the run's tokenizer,
//                                        tokenizer.json, tokenizer_config.json, special_tokens_map.json
//                                        (io/hf_folder.hpp): what transformers' AutoModelForCausalLM /
//                                        AutoTokenizer and our PyTorch reference (tests/golden/
//                                        minimind_ref.py) load as is. load_pretrained also reads folders
//                                        transformers wrote: BF16 / F16 weights, sharded
//                                        model-0000X-of-0000N.safetensors with model.safetensors.index.json.
//   save_checkpoint / load_checkpoint    the same files (weights always F32) + DIR/training_state.safetensors: optimizer
//                                        state slabs ("optimizer.exp_avg", ...) and, as JSON metadata,
//                                        step counters, RNG, data position and the run's settings.
//   checkpoint_dir, list_checkpoints, latest_checkpoint, prune_checkpoints
//                                        <out_dir>/checkpoints/step_00001234 folders.
//
// Loading is all-or-nothing: every name, shape and dtype is checked before the first byte is copied, so a
// failed load leaves the model and the optimizer as they were. Errors name the file and the tensor or key.
//
// Crash safety: each file is written with write_file_atomic (temporary file, fsync, rename), and a
// checkpoint folder as a whole is built in <dir>.tmp-<pid> and renamed to <dir> only when complete, so a
// folder named step_N is always complete. Replacing an existing step_N moves it aside to <dir>.old-<pid>
// first and removes it after; a crash between those two renames leaves no step_N, and latest_checkpoint()
// falls back to the previous checkpoint. Pruning renames step_N to step_N.del-<pid> before deleting it, so
// a folder disappears whole too. remove_checkpoint_leftovers() (called by the trainer at start) deletes the
// .tmp-/.old-/.del- folders and .tmp.<pid> files of processes that no longer run.
//
// A model never reaches disk with NaN or Inf in it: save_pretrained and save_checkpoint refuse, naming the
// tensor, and load_pretrained refuses such a file the same way (so eval, generate and chat do).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "../memory/finite.hpp"
#include "../data/token_loader.hpp"
#include "../nn/transformer.hpp"
#include "../optim/optimizer.hpp"
#include "atomic_file.hpp"
#include "crash_point.hpp"
#include "hf_config.hpp"
#include "hf_folder.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace minitrain {

/// Everything besides weights and optimizer slabs that a run needs to continue exactly.
struct TrainingState {
    std::int64_t step = 0;        // optimizer steps taken by the run
    std::int64_t epoch = 0;
    std::int64_t micro_step = 0;  // micro-batches consumed (gradient accumulation)
    Rng rng;                      // the run's random stream (dropout, sampling): seed and position
    nlohmann::json data;          // where the next batch comes from: the task's Data::Position as JSON
    int world_size = 1;
    int threads = 1;
    nlohmann::json extra;         // free-form: schedule name and options, the run's config (the trainer fills it)
};

namespace detail {

inline const char* const config_file = "config.json";
inline const char* const weights_file = "model.safetensors";
inline const char* const state_file = "training_state.safetensors";
inline const char* const state_metadata_key = "minitrain.training_state";

/// Parses a JSON file; Error naming the file when it cannot be read or is not valid JSON.
inline nlohmann::json read_json_file(const std::filesystem::path& path) {
    return read_json(path);  // io/json.hpp: nesting bounded, errors name the file
}

inline void write_json_file(const std::filesystem::path& path, const nlohmann::json& j) {
    const std::string text = j.dump(2) + "\n";
    write_file_atomic(path, [&](std::ostream& os) { os.write(text.data(), std::streamsize(text.size())); });
}

/// A 1-D or N-D CPU f32 view of `count` floats at `p`.
inline Tensor host_f32(float* p, Shape shape) {
    Tensor t;
    t.ptr = p;
    t.shape = shape;
    t.dtype = DType::f32;
    t.device = Device::cpu;
    return t;
}

/// The parameters as host tensors under their names, in slab order. On the CPU these are the parameters
/// themselves; on another backend the data slab is copied into `staging` first.
template <class Backend>
std::vector<NamedTensor> host_parameters(const ParameterSet<Backend>& ps, std::vector<float>& staging) {
    std::vector<NamedTensor> out;
    if constexpr (Backend::device != Device::cpu) {
        staging.resize(ps.count());
        Backend::to_host(staging.data(), ps.data());
    }
    for (const Parameter& p : ps.all()) {
        if constexpr (Backend::device == Device::cpu)
            out.push_back({p.name, p.var.data});
        else
            out.push_back({p.name, host_f32(staging.data() + p.offset, p.shape)});
    }
    return out;
}

/// Copies a file tensor into a backend tensor of the same shape (host staging off the CPU).
template <class Backend>
void read_into_backend(const SafeTensors& st, const std::string& name, const Tensor& dst, std::vector<float>& staging) {
    if constexpr (Backend::device == Device::cpu) {
        st.read_into(name, dst);
    } else {
        staging.resize(std::size_t(dst.numel()));
        st.read_into(name, host_f32(staging.data(), dst.shape));
        Backend::from_host(dst, staging.data());
    }
}

inline std::vector<std::int64_t> dims_of(const Shape& s) {
    return std::vector<std::int64_t>(s.dims.begin(), s.dims.begin() + s.rank);
}

/// Checks that tensor `name` of `st` can be read into an f32 tensor of shape `want` (the dtypes
/// SafeTensors::read_into converts to f32 exactly). `exact_f32`: only F32 (state that must be bit-exact).
inline void check_loadable(const SafeTensors& st, const std::string& name, const Shape& want, bool exact_f32,
                           const char* what) {
    const auto& ti = st.info(name);
    MT_CHECK(ti.shape == dims_of(want), st.path().string(), ": tensor \"", name, "\" has shape ", shape_str(ti.shape),
             ", ", what, " needs ", want);
    const bool ok = ti.dtype == "F32" || (!exact_f32 && (ti.dtype == "BF16" || ti.dtype == "F16"));
    MT_CHECK(ok, st.path().string(), ": tensor \"", name, "\" is ", ti.dtype, ", expected ",
             exact_f32 ? "F32" : "F32, BF16 or F16");
}

inline bool regular_file(const std::filesystem::path& p) {
    std::error_code ec;
    return std::filesystem::is_regular_file(p, ec);
}

/// The step of a folder named exactly "step_<digits>", or -1.
inline std::int64_t step_of(const std::string& name) {
    if (name.size() <= 5 || name.compare(0, 5, "step_") != 0 || name.size() > 5 + 18) return -1;
    std::int64_t v = 0;
    for (std::size_t i = 5; i < name.size(); ++i) {
        if (name[i] < '0' || name[i] > '9') return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

/// Builds a folder atomically: `write` fills `<dir>.tmp-<pid>`, which is fsync'ed and renamed to `dir`;
/// an existing `dir` is moved aside first and removed after. On failure the temporary folder is removed
/// and `dir` is left as it was.
inline void write_directory_atomic(const std::filesystem::path& dir,
                                   const std::function<void(const std::filesystem::path&)>& write) {
    MT_CHECK(!dir.empty() && dir.has_filename(), "write_directory_atomic: \"", dir.string(), "\" is not a folder path");
    const std::filesystem::path parent = dir.has_parent_path() ? dir.parent_path() : std::filesystem::path(".");
    const std::string pid = std::to_string(::getpid());
    std::filesystem::path tmp = dir, aside = dir;
    tmp += ".tmp-" + pid;
    aside += ".old-" + pid;
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) fail(parent.string(), ": cannot create folder: ", ec.message());
    std::filesystem::remove_all(tmp, ec);  // our own leftover from an earlier failed attempt
    std::filesystem::create_directory(tmp, ec);
    if (ec) fail(tmp.string(), ": cannot create folder: ", ec.message());
    try {
        write(tmp);
        if (int err = fsync_directory(tmp)) fail(tmp.string(), ": cannot sync folder: ", errno_text(err));
    } catch (const std::exception& e) {
        std::filesystem::remove_all(tmp, ec);
        // Name the folder the user asked for, not our temporary one: "<dir>/model.safetensors: write failed".
        std::string what = e.what();
        for (std::size_t at; (at = what.find(tmp.string())) != std::string::npos;)
            what.replace(at, tmp.string().size(), dir.string());
        fail(dir.string(), ": not saved (", std::filesystem::exists(dir, ec) ? "the previous version is kept" : "nothing was written",
             "): ", what);
    } catch (...) {
        std::filesystem::remove_all(tmp, ec);
        throw;
    }
    crash_point("save.written");
    bool moved_aside = false;
    if (std::filesystem::exists(dir, ec)) {
        std::filesystem::remove_all(aside, ec);
        std::filesystem::rename(dir, aside, ec);
        if (ec) {
            std::string why = ec.message();
            std::filesystem::remove_all(tmp, ec);
            fail(dir.string(), ": cannot move the existing folder aside to ", aside.string(), ": ", why);
        }
        moved_aside = true;
        crash_point("save.aside");
    }
    std::filesystem::rename(tmp, dir, ec);
    if (ec) {
        std::string why = ec.message();
        if (moved_aside) std::filesystem::rename(aside, dir, ec);
        std::filesystem::remove_all(tmp, ec);
        fail(dir.string(), ": cannot rename ", tmp.string(), " to it: ", why);
    }
    if (int err = fsync_directory(parent))
        fail(dir.string(), ": written, but syncing ", parent.string(), " failed: ", errno_text(err));
    crash_point("save.renamed");
    if (moved_aside) std::filesystem::remove_all(aside, ec);
}

/// Error naming `where` and the tensor when a parameter of `ps` is NaN or Inf.
template <class Backend>
void check_finite_parameters(const ParameterSet<Backend>& ps, const std::string& where, const char* doing) {
    if (auto bad = find_non_finite(ps))
        fail(where, ": ", doing, " a model with non-finite weights: ", describe(*bad),
             ". The run diverged before this point; resume from an earlier checkpoint with a lower learning rate "
             "or gradient clipping");
}

/// Typed access to the training-state JSON, with errors naming the file and the key.
struct StateJson {
    const nlohmann::json& j;
    std::string where;

    const nlohmann::json& at(const nlohmann::json& obj, const char* key, const std::string& path) const {
        MT_CHECK(obj.is_object() && obj.contains(key), where, ": training state has no \"", path, "\"");
        return obj.at(key);
    }
    std::int64_t i64(const nlohmann::json& obj, const char* key, const std::string& path) const {
        const auto& v = at(obj, key, path);
        MT_CHECK(v.is_number_integer(), where, ": training state \"", path, "\" must be an integer, found ", show_json(v));
        return v.get<std::int64_t>();
    }
    /// u64 values are stored as decimal strings, so readers whose numbers are doubles keep all 64 bits.
    std::uint64_t u64(const nlohmann::json& obj, const char* key, const std::string& path) const {
        const auto& v = at(obj, key, path);
        MT_CHECK(v.is_string(), where, ": training state \"", path, "\" must be a decimal string, found ", show_json(v));
        const std::string s = v.get<std::string>();
        std::uint64_t x = 0;
        bool ok = !s.empty() && s.size() <= 20;
        for (char ch : s) {
            if (ch < '0' || ch > '9' || x > (UINT64_MAX - std::uint64_t(ch - '0')) / 10) {
                ok = false;
                break;
            }
            x = x * 10 + std::uint64_t(ch - '0');
        }
        MT_CHECK(ok, where, ": training state \"", path, "\" is \"", s, "\", not an unsigned 64-bit decimal");
        return x;
    }
};

}  // namespace detail

// ---- model folders --------------------------------------------------------------------------------

/// The element type of model.safetensors in a model folder (--save_dtype). A checkpoint folder is always
/// F32: resuming must continue from the exact weights.
enum class SaveDType { f32, bf16, f16 };

inline SaveDType parse_save_dtype(const std::string& s) {
    if (s == "f32") return SaveDType::f32;
    if (s == "bf16") return SaveDType::bf16;
    if (s == "f16") return SaveDType::f16;
    detail::fail("--save_dtype \"", s, "\": expected f32, bf16 or f16");
}

/// torch_dtype in config.json ("float32", "bfloat16", "float16").
inline const char* torch_dtype_name(SaveDType d) {
    return d == SaveDType::bf16 ? "bfloat16" : d == SaveDType::f16 ? "float16" : "float32";
}

/// What a model folder holds besides the weights.
struct SaveOptions {
    HFTokenIds tokens;                 ///< unset ids are taken from the tokenizer (io/hf_folder.hpp)
    std::filesystem::path tokenizer;   ///< tokenizer.json to copy in (with tokenizer_config.json and
                                       ///< special_tokens_map.json); empty: none
    SaveDType dtype = SaveDType::f32;  ///< model.safetensors' element type
};

/// Writes a model folder, each file atomically, creating dir: config.json (hf_config<Net>, torch_dtype
/// = options.dtype), model.safetensors (every parameter under its HF name, in options.dtype, rounded to
/// nearest even; metadata {"format": "pt"} as transformers requires), generation_config.json, and, given
/// options.tokenizer, tokenizer.json, tokenizer_config.json and special_tokens_map.json (io/hf_folder.hpp):
/// a folder transformers' AutoModelForCausalLM and AutoTokenizer load as they are.
template <ModelPolicy Net, class Backend>
void save_pretrained(const std::filesystem::path& dir, const Transformer<Net, Backend>& model,
                     const SaveOptions& options) {
    detail::check_finite_parameters(model.params(), dir.string(), "refusing to save");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) detail::fail(dir.string(), ": cannot create folder: ", ec.message());
    HFTokenIds ids = options.tokens;
    if (!options.tokenizer.empty()) {
        write_tokenizer_files(dir, options.tokenizer, model.config().max_seq_len);
        const HFTokenIds from = hf_token_ids(Tokenizer::load(options.tokenizer));
        if (!ids.bos_token_id) ids.bos_token_id = from.bos_token_id;
        if (!ids.eos_token_id) ids.eos_token_id = from.eos_token_id;
        if (!ids.pad_token_id) ids.pad_token_id = from.pad_token_id;
    }
    std::vector<float> staging;
    std::vector<NamedTensor> tensors = detail::host_parameters(model.params(), staging);
    std::vector<std::vector<std::uint16_t>> narrow;  // the 16-bit copies, one per tensor
    if (options.dtype != SaveDType::f32) {
        for (NamedTensor& nt : tensors) {
            const float* src = nt.tensor.data<float>();
            auto& h = narrow.emplace_back(std::size_t(nt.tensor.numel()));
            for (std::size_t i = 0; i < h.size(); ++i)
                h[i] = options.dtype == SaveDType::bf16 ? bf16(src[i]).bits : detail::f32_to_f16(src[i]);
            nt.tensor.ptr = h.data();
            nt.tensor.dtype = DType::bf16;  // 2 bytes each; the header says which 16-bit type
            nt.file_dtype = options.dtype == SaveDType::bf16 ? "BF16" : "F16";
        }
    }
    save_safetensors(dir / detail::weights_file, tensors, {{"format", "pt"}});
    nlohmann::json cfg = hf_config<Net>(model.config(), ids);
    cfg["torch_dtype"] = torch_dtype_name(options.dtype);
    detail::write_json_file(dir / detail::config_file, cfg);
    detail::write_json_file(dir / "generation_config.json", hf_generation_config(ids));
}

/// save_pretrained with only token ids: config.json, model.safetensors (F32), generation_config.json.
template <ModelPolicy Net, class Backend>
void save_pretrained(const std::filesystem::path& dir, const Transformer<Net, Backend>& model,
                     const HFTokenIds& tokens = {}) {
    save_pretrained(dir, model, SaveOptions{tokens, {}, SaveDType::f32});
}

/// The run-time sizes stored in dir/config.json, to construct the Transformer that load_pretrained fills.
inline ModelConfig load_model_config(const std::filesystem::path& dir) {
    const auto path = dir / detail::config_file;
    return model_config_from(detail::read_json_file(path), path.string());
}

/// Loads a model folder into `model`: dir/config.json must describe Net with the model's vocab_size
/// (config_mismatch; max_position_embeddings may differ), and dir/model.safetensors (or its shards, or
/// transformers' pytorch_model.bin: see SafeTensorsFolder) must hold exactly the model's parameters with
/// their shapes, as F32, BF16 or F16. `dir` may also be a weights file alone (MiniMind's out/*.pth, a
/// .safetensors): without a config.json, the tensors' names and shapes are all that is checked. A stored "lm_head.weight" is accepted
/// and ignored when it equals model.embed_tokens.weight (some writers store the tied head twice).
/// Everything is checked before anything is copied: on Error the model is unchanged.
template <ModelPolicy Net, class Backend>
void load_pretrained(const std::filesystem::path& dir, Transformer<Net, Backend>& model) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(dir, ec)) {  // a weights file alone has no config: the shapes decide
        const auto cfg_path = dir / detail::config_file;
        const nlohmann::json cfg = detail::read_json_file(cfg_path);
        if (std::string why = detail::config_mismatch_at<Net>(cfg_path.string(), cfg, &model.config()); !why.empty())
            throw Error(why);
    }

    const SafeTensorsFolder st(dir);  // model.safetensors, or transformers' shards and their index
    const std::string& where = st.where();
    auto& ps = model.params();
    for (const std::string& name : st.names()) {
        if (ps.try_find(name)) continue;
        if (name == "lm_head.weight") {
            const Parameter& emb = ps.find("model.embed_tokens.weight");
            detail::check_loadable(st.file(name), name, emb.shape, false,
                                   "the tied output head (= model.embed_tokens.weight)");
            MT_CHECK(st.contains(emb.name), where, ": missing tensor \"", emb.name, "\" (expected shape ", emb.shape,
                     ")");
            detail::check_loadable(st.file(emb.name), emb.name, emb.shape, false, "the model");
            std::vector<float> head(std::size_t(emb.shape.numel())), table(head.size());
            st.file(name).read_into(name, detail::host_f32(head.data(), emb.shape));
            st.file(emb.name).read_into(emb.name, detail::host_f32(table.data(), emb.shape));
            MT_CHECK(std::memcmp(head.data(), table.data(), head.size() * sizeof(float)) == 0, where,
                     ": tensor \"lm_head.weight\" differs from \"model.embed_tokens.weight\", but the model ties its "
                     "output head to the embedding (tie_word_embeddings)");
            continue;
        }
        detail::fail(st.file(name).path().string(), ": unexpected tensor \"", name, "\" ",
                     detail::shape_str(st.file(name).info(name).shape), ": the model has no parameter of that name");
    }
    for (const Parameter& p : ps.all()) {
        MT_CHECK(st.contains(p.name), where, ": missing tensor \"", p.name, "\" (expected shape ", p.shape, ")");
        detail::check_loadable(st.file(p.name), p.name, p.shape, false, "the model");
    }
    // Every value checked before the first is copied (one tensor at a time), so a NaN file changes nothing.
    std::vector<float> staging;
    for (const Parameter& p : ps.all()) {
        staging.resize(std::size_t(p.shape.numel()));
        st.file(p.name).read_into(p.name, detail::host_f32(staging.data(), p.shape));
        if (auto bad = find_non_finite(p.name, staging.data(), p.shape.numel()))
            detail::fail(st.file(p.name).path().string(), ": refusing to load a model with non-finite weights: tensor ",
                         describe(*bad), ". It was saved from a run that diverged; use an earlier checkpoint");
    }
    for (const Parameter& p : ps.all()) detail::read_into_backend<Backend>(st.file(p.name), p.name, p.var.data, staging);
}

// ---- training checkpoints -------------------------------------------------------------------------

/// <out_dir>/checkpoints/step_<step, 8 digits>.
inline std::filesystem::path checkpoint_dir(const std::filesystem::path& out_dir, std::int64_t step) {
    MT_CHECK(step >= 0, "checkpoint_dir: step must be >= 0, got ", step);
    char name[32];
    std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
    return out_dir / "checkpoints" / name;
}

/// Writes a checkpoint folder `dir` (normally checkpoint_dir(out_dir, state.step)) atomically:
/// config.json + model.safetensors (a model folder, see save_pretrained) and training_state.safetensors
/// with the optimizer's state slabs as "optimizer.<name>" (F32, exact) and metadata
/// "minitrain.training_state": JSON with the TrainingState, the optimizer's algorithm and step count.
/// A sharded optimizer (ZeRO-1) holds only its shard of the state: pass the gathered whole slabs as
/// `full_state` (same names as optimizer.state(), each trainable_count long), so that one set of files
/// loads on any world size.
template <ModelPolicy Net, class Backend, class Algo>
void save_checkpoint(const std::filesystem::path& dir, const Transformer<Net, Backend>& model,
                     const Optimizer<Algo, Backend>& optimizer, const TrainingState& state,
                     const SaveOptions& files = {},
                     const std::vector<std::pair<std::string, Tensor>>* full_state = nullptr) {
    MT_CHECK(!optimizer.sharded() || full_state, dir.string(),
             ": the optimizer holds one shard of its state (ZeRO-1): gather the whole state and pass it as full_state");
    MT_CHECK(state.step >= 0 && state.epoch >= 0 && state.micro_step >= 0, dir.string(),
             ": training state counters must be >= 0, got step ", state.step, ", epoch ", state.epoch, ", micro_step ",
             state.micro_step);
    MT_CHECK(state.world_size >= 1 && state.threads >= 1, dir.string(),
             ": training state world_size and threads must be >= 1, got ", state.world_size, " and ", state.threads);

    nlohmann::json meta;
    meta["version"] = checkpoint_format_version;
    meta["step"] = state.step;
    meta["epoch"] = state.epoch;
    meta["micro_step"] = state.micro_step;
    meta["rng"] = {{"seed", std::to_string(state.rng.seed)}, {"counter", std::to_string(state.rng.counter)}};
    meta["data"] = state.data;
    meta["world_size"] = state.world_size;
    meta["threads"] = state.threads;
    const auto slabs = full_state ? *full_state : optimizer.state();
    for (const auto& [name, t] : slabs)
        MT_CHECK(t.numel() == std::int64_t(optimizer.params().trainable_count()), dir.string(), ": optimizer state \"",
                 name, "\" has ", t.numel(), " elements, expected the ", optimizer.params().trainable_count(),
                 " trainable ones");
    nlohmann::json names = nlohmann::json::array();
    for (const auto& [name, t] : slabs) names.push_back(name);
    meta["optimizer"] = {{"algorithm", std::string(Algo::name)},
                         {"steps", optimizer.steps()},
                         {"trainable_count", optimizer.params().trainable_count()},
                         {"state", names}};
    meta["extra"] = state.extra;

    // Host copies of the state slabs (views on the CPU).
    std::vector<std::vector<float>> staging;
    std::vector<NamedTensor> tensors;
    for (const auto& [name, t] : slabs) {
        Tensor h = t;
        if (t.device != Device::cpu) {
            staging.emplace_back(std::size_t(t.numel()));
            Backend::to_host(staging.back().data(), t);
            h = detail::host_f32(staging.back().data(), t.shape);
        }
        tensors.push_back({"optimizer." + name, h});
        if (auto bad = find_non_finite("optimizer." + name, h.data<float>(), h.numel()))
            detail::fail(dir.string(), ": refusing to save a checkpoint whose optimizer state is not finite: ",
                         describe(*bad));
    }

    detail::write_directory_atomic(dir, [&](const std::filesystem::path& tmp) {
        SaveOptions exact = files;
        exact.dtype = SaveDType::f32;  // resuming continues from these weights: never rounded
        save_pretrained(tmp, model, exact);
        save_safetensors(tmp / detail::state_file, tensors,
                         {{"format", "pt"}, {detail::state_metadata_key, meta.dump()}});
    });
}

/// Restores a checkpoint folder written by save_checkpoint: the weights (load_pretrained), the optimizer's
/// state slabs bit for bit and its step count, and returns the TrainingState. The optimizer must be the
/// same algorithm, configured alike (same state slabs) over the same trainable parameters. Everything is
/// checked before anything is copied: on Error the model and the optimizer are unchanged.
template <ModelPolicy Net, class Backend, class Algo>
TrainingState load_checkpoint(const std::filesystem::path& dir, Transformer<Net, Backend>& model,
                              Optimizer<Algo, Backend>& optimizer) {
    std::error_code ec;
    MT_CHECK(std::filesystem::is_directory(dir, ec), dir.string(), ": no such checkpoint folder");
    SafeTensors st(dir / detail::state_file);
    const std::string where = st.path().string();
    auto mit = st.metadata().find(detail::state_metadata_key);
    MT_CHECK(mit != st.metadata().end(), where, ": no \"", detail::state_metadata_key,
             "\" metadata: not a minitrain training state");
    // Bounded nesting (io/json.hpp): the values are copied and quoted in messages, both recursive.
    const nlohmann::json meta =
        detail::parse_json(mit->second, where + ": metadata \"" + detail::state_metadata_key + "\"");
    MT_CHECK(meta.is_object(), where, ": metadata \"", detail::state_metadata_key, "\" must be a JSON object");
    const detail::StateJson sj{meta, where};
    const std::int64_t version = sj.i64(meta, "version", "version");
    MT_CHECK(version >= 1 && version <= checkpoint_format_version, where, ": training state version ", version,
             ", this build reads versions 1 to ", checkpoint_format_version);

    TrainingState s;
    s.step = sj.i64(meta, "step", "step");
    s.epoch = sj.i64(meta, "epoch", "epoch");
    s.micro_step = sj.i64(meta, "micro_step", "micro_step");
    MT_CHECK(s.step >= 0 && s.epoch >= 0 && s.micro_step >= 0, where,
             ": training state counters must be >= 0, found step ", s.step, ", epoch ", s.epoch, ", micro_step ",
             s.micro_step, " (the file is damaged or was not written by minitrain)");
    const auto& rng = sj.at(meta, "rng", "rng");
    s.rng.seed = sj.u64(rng, "seed", "rng.seed");
    s.rng.counter = sj.u64(rng, "counter", "rng.counter");
    s.data = sj.at(meta, "data", "data");
    s.world_size = int(sj.i64(meta, "world_size", "world_size"));
    s.threads = int(sj.i64(meta, "threads", "threads"));
    s.extra = meta.contains("extra") ? meta.at("extra") : nlohmann::json();

    const auto& opt = sj.at(meta, "optimizer", "optimizer");
    const auto& algo = sj.at(opt, "algorithm", "optimizer.algorithm");
    MT_CHECK(algo.is_string() && algo.get<std::string>() == Algo::name, where, ": optimizer.algorithm is ", detail::show_json(algo),
             ", the optimizer being restored is \"", Algo::name, "\"");
    const std::int64_t steps = sj.i64(opt, "steps", "optimizer.steps");
    MT_CHECK(steps >= 0, where, ": optimizer.steps is ", steps, ", must be >= 0");

    // The optimizer's slabs and the file's tensors must correspond one to one.
    const auto slabs = optimizer.state();
    for (const std::string& name : st.names()) {
        bool known = false;
        for (const auto& [n, t] : slabs) known = known || name == "optimizer." + n;
        MT_CHECK(known, where, ": unexpected tensor \"", name, "\": the ", Algo::name,
                 " optimizer being restored has no such state (is it configured like the one saved?)");
    }
    for (const auto& [n, t] : slabs) {
        const std::string name = "optimizer." + n;
        MT_CHECK(st.contains(name), where, ": missing tensor \"", name, "\" (the ", Algo::name,
                 " optimizer being restored has this state; was the saved one configured differently?)");
        detail::check_loadable(st, name, Shape{std::int64_t(optimizer.params().trainable_count())}, true,
                               "the optimizer's trainable parameters");
    }

    load_pretrained(dir, model);  // validates everything before copying; throws with the model unchanged
    std::vector<float> staging;
    for (const auto& [n, t] : slabs) {
        if (!optimizer.sharded()) {
            detail::read_into_backend<Backend>(st, "optimizer." + n, t, staging);
            continue;
        }
        // ZeRO-1: this rank's shard of the whole slab, whatever world size wrote the file.
        const std::size_t total = optimizer.params().trainable_count();
        staging.resize(total);
        st.read_into("optimizer." + n, detail::host_f32(staging.data(), Shape{std::int64_t(total)}));
        Backend::from_host(t, staging.data() + optimizer.shard_begin());
    }
    optimizer.set_steps(steps);
    return s;
}

// ---- checkpoint folders ---------------------------------------------------------------------------

/// The complete checkpoints in <out_dir>/checkpoints (step_N folders holding config.json,
/// model.safetensors and training_state.safetensors), by increasing step. Other entries (.tmp-/.old-
/// folders, incomplete folders, files) are skipped.
inline std::vector<std::pair<std::int64_t, std::filesystem::path>> list_checkpoints(
    const std::filesystem::path& out_dir) {
    namespace fs = std::filesystem;
    std::vector<std::pair<std::int64_t, fs::path>> out;
    const fs::path root = out_dir / "checkpoints";
    std::error_code ec;
    if (!fs::is_directory(root, ec)) return out;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
        const fs::path& p = it->path();
        const std::int64_t step = detail::step_of(p.filename().string());
        std::error_code entry_ec;  // an entry we cannot stat is skipped, not an error for the whole listing
        if (step < 0 || !fs::is_directory(p, entry_ec)) continue;
        if (detail::regular_file(p / detail::config_file) && detail::regular_file(p / detail::weights_file) &&
            detail::regular_file(p / detail::state_file))
            out.emplace_back(step, p);
    }
    if (ec) detail::fail(root.string(), ": cannot list folder: ", ec.message());
    std::sort(out.begin(), out.end());
    return out;
}

/// The complete checkpoint with the highest step in <out_dir>/checkpoints, if any.
inline std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& out_dir) {
    auto all = list_checkpoints(out_dir);
    if (all.empty()) return std::nullopt;
    return all.back().second;
}

/// Removes the oldest complete checkpoints so that `keep_last` remain; keep_last <= 0 keeps all. Each one is
/// first renamed to <dir>.del-<pid> and then deleted, so no step_N folder is ever seen half deleted. The
/// newest checkpoint is never removed; since checkpoints are only written with finite weights, neither is
/// the newest finite one. Incomplete and temporary folders are left alone.
inline void prune_checkpoints(const std::filesystem::path& out_dir, int keep_last) {
    if (keep_last <= 0) return;
    auto all = list_checkpoints(out_dir);
    for (std::size_t i = 0; i + std::size_t(keep_last) < all.size(); ++i) {
        std::error_code ec;
        std::filesystem::path doomed = all[i].second;
        doomed += ".del-" + std::to_string(::getpid());
        std::filesystem::rename(all[i].second, doomed, ec);
        if (ec) detail::fail(all[i].second.string(), ": cannot remove old checkpoint (rename to ", doomed.string(), "): ", ec.message());
        detail::crash_point("prune.renamed");
        std::filesystem::remove_all(doomed, ec);
        if (ec) detail::fail(doomed.string(), ": cannot remove old checkpoint: ", ec.message());
    }
}

namespace detail {

/// The pid in a name ending in `<marker><digits>` (".tmp-123", ".old-123", ".del-123", ".tmp.123"), or -1.
inline long leftover_pid(const std::string& name) {
    for (const char* marker : {".tmp-", ".old-", ".del-", ".tmp."}) {
        const auto at = name.rfind(marker);
        if (at == std::string::npos || at == 0) continue;
        const std::string digits = name.substr(at + 5);
        if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
        return std::stol(digits);
    }
    return -1;
}

/// Whether a process with this pid runs on this machine (EPERM: it exists, owned by someone else).
inline bool process_alive(long pid) { return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno == EPERM); }

}  // namespace detail

/// Removes what interrupted saves and prunes left in a run folder: <out_dir>/checkpoints/*.{tmp,old,del}-<pid>
/// folders and *.tmp.<pid> files (in out_dir, its checkpoints and final/) whose process no longer runs,
/// and step_N folders with files missing (torn by a prune of an older minitrain, or by hand). Returns one
/// note per entry removed. The pid test assumes one machine writes the folder (as rank 0 alone does).
inline std::vector<std::string> remove_checkpoint_leftovers(const std::filesystem::path& out_dir) {
    namespace fs = std::filesystem;
    std::vector<std::string> notes;
    std::error_code ec;
    auto sweep = [&](const fs::path& folder, bool checkpoints) {
        if (!fs::is_directory(folder, ec)) return;
        std::vector<fs::path> doomed;
        for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
            const fs::path& p = it->path();
            const std::string name = p.filename().string();
            const long pid = detail::leftover_pid(name);
            if (pid > 0 && pid != long(::getpid()) && !detail::process_alive(pid)) {
                doomed.push_back(p);
            } else if (checkpoints && detail::step_of(name) >= 0 && fs::is_directory(p, ec) &&
                       !(detail::regular_file(p / detail::config_file) && detail::regular_file(p / detail::weights_file) &&
                         detail::regular_file(p / detail::state_file))) {
                doomed.push_back(p);
            }
        }
        ec.clear();
        for (const fs::path& p : doomed) {
            fs::remove_all(p, ec);
            if (ec) detail::fail(p.string(), ": cannot remove the leftover of an interrupted save: ", ec.message());
            notes.push_back("removed " + p.string() + " (left by an interrupted save or prune)");
        }
    };
    sweep(out_dir, false);
    sweep(out_dir / "final", false);
    sweep(out_dir / "checkpoints", true);
    for (const auto& [step, dir] : list_checkpoints(out_dir)) sweep(dir, false);
    return notes;
}

}  // namespace minitrain
