// minitrain/io/safetensors.hpp
// Reading and writing the safetensors format, the interchange format of Hugging Face checkpoints:
//
//   [8 bytes]  N, little-endian u64: length of the header
//   [N bytes]  JSON: {"<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...,
//                     "__metadata__": {"<key>": "<value>", ...}}   (padded with spaces)
//   [rest]     the data buffer; offsets are relative to its first byte; each tensor is contiguous,
//              row-major, little-endian.
//
// SafeTensors maps the file and validates all of it up front (like the reference implementation: tensors
// must tile the data buffer exactly, without overlap or gap), so a corrupt or truncated checkpoint fails
// at open with a message naming the file and the tensor, instead of producing garbage weights later.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "atomic_file.hpp"
#include "json.hpp"
#include "mmap.hpp"

namespace minitrain {

static_assert(std::endian::native == std::endian::little,
              "minitrain's file formats are little-endian and are read by plain copies: big-endian hosts are unsupported");

namespace detail {

/// Bytes per element of every safetensors dtype; 0 for a name the format does not define.
inline std::size_t safetensors_dtype_size(const std::string& d) {
    static const std::map<std::string, std::size_t, std::less<>> sizes = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2},  {"U16", 2}, {"F16", 2},
        {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
    auto it = sizes.find(d);
    return it == sizes.end() ? 0 : it->second;
}

inline const char* safetensors_dtype_name(DType t) {
    switch (t) {
        case DType::f32: return "F32";
        case DType::f64: return "F64";
        case DType::bf16: return "BF16";
        case DType::i32: return "I32";
    }
    return "?";
}

/// "(64, 32)", the same spelling as Shape's operator<<, for shapes of any rank.
inline std::string shape_str(const std::vector<std::int64_t>& s) {
    std::ostringstream os;
    os << '(';
    for (std::size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
    os << ')';
    return os.str();
}

/// IEEE half to float, exact (every half is representable as a float).
inline float f16_to_f32(std::uint16_t h) {
    std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);  // inf / NaN
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);  // rebias 15 -> 127
    } else if (man == 0) {
        bits = sign;  // signed zero
    } else {
        // Subnormal half: shift the mantissa up until its leading 1 becomes the implicit bit.
        int e = -1;
        do {
            man <<= 1;
            ++e;
        } while (!(man & 0x400u));
        bits = sign | (std::uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

/// f32 -> IEEE half, round to nearest even; overflow to Inf, NaN kept quiet.
inline std::uint16_t f32_to_f16(float f) {
    std::uint32_t x;
    std::memcpy(&x, &f, 4);
    const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
    std::uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | (a > 0x7f800000u ? 0x7e00 : 0x7c00);
    if (a >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to Inf
    if (a < 0x38800000u) {                        // below 2^-14: a subnormal half, in units of 2^-24
        float v;
        std::memcpy(&v, &a, 4);
        return sign | std::uint16_t(std::nearbyint(v * 16777216.0f));  // default rounding: nearest even
    }
    a += 0xc8000fffu + ((a >> 13) & 1u);  // exponent 127 -> 15 bias, plus round to nearest even
    return sign | std::uint16_t(a >> 13);
}

/// Element i of an unaligned little-endian array (offsets inside the data buffer need not be aligned).
template <class T>
inline T load_unaligned(const std::byte* p, std::size_t i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    return v;
}

}  // namespace detail

/// A safetensors file opened for reading (memory-mapped). All validation happens in the constructor.
class SafeTensors {
public:
    struct TensorInfo {
        std::string name;
        std::string dtype;                // safetensors spelling: "F32", "BF16", ...
        std::vector<std::int64_t> shape;  // any rank; empty for a scalar
        const std::byte* data;            // into the mapping; valid while the SafeTensors lives
        std::size_t bytes;
    };

    explicit SafeTensors(const std::filesystem::path& path) : file_(path), where_(path.string()) { parse(); }

    /// Tensors that another reader found in `file` (io/torch_pickle.hpp: a torch.save() archive), each
    /// `data` pointing into it with `bytes` = numel * the dtype's size, in the given order; the same
    /// read_into conversions as a safetensors file. A name given twice is an Error naming `where`.
    SafeTensors(MappedFile&& file, std::string where, std::vector<TensorInfo> tensors)
        : file_(std::move(file)), where_(std::move(where)) {
        for (auto& ti : tensors) {
            MT_CHECK(!tensors_.count(ti.name), where_, ": tensor \"", ti.name, "\" appears twice");
            names_.push_back(ti.name);
            tensors_.emplace(ti.name, std::move(ti));
        }
    }

    const std::filesystem::path& path() const { return file_.path(); }
    bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
    /// Tensor names in the order of their data in the file.
    const std::vector<std::string>& names() const { return names_; }
    std::size_t size() const { return names_.size(); }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    const TensorInfo& info(const std::string& name) const {
        auto it = tensors_.find(name);
        if (it == tensors_.end()) detail::fail(where_, ": no tensor named \"", name, "\" (the file holds ", names_.size(), ")");
        return it->second;
    }

    /// Copies tensor `name` into `dst`, a CPU tensor of the same shape. Accepted conversions (all exact
    /// or range-checked): F32->f32|f64, F64->f64, BF16->bf16|f32|f64, F16->f32|f64, I32->i32, I64->i32.
    /// For a device tensor, read into a host staging tensor and copy it over.
    void read_into(const std::string& name, const Tensor& dst) const {
        const TensorInfo& ti = info(name);
        MT_CHECK(dst.device == Device::cpu, where_, ": tensor \"", name, "\": read_into needs a CPU destination, got a ",
                 device_name(dst.device), " tensor (read into a host staging tensor, then copy)");
        std::vector<std::int64_t> want(dst.shape.dims.begin(), dst.shape.dims.begin() + dst.shape.rank);
        MT_CHECK(ti.shape == want, where_, ": tensor \"", name, "\" has shape ", detail::shape_str(ti.shape),
                 ", expected ", dst.shape);
        const std::size_t n = std::size_t(dst.numel());
        MT_CHECK(n == 0 || dst.ptr != nullptr, where_, ": tensor \"", name, "\": destination tensor has no storage");
        const std::byte* src = ti.data;
        const std::string& d = ti.dtype;
        auto convert = [&]<class Out>(Out* out, auto load) {
            for (std::size_t i = 0; i < n; ++i) out[i] = Out(load(i));
        };

        if (d == "F32" && dst.dtype == DType::f32) return copy(ti, dst);
        if (d == "F64" && dst.dtype == DType::f64) return copy(ti, dst);
        if (d == "BF16" && dst.dtype == DType::bf16) return copy(ti, dst);
        if (d == "I32" && dst.dtype == DType::i32) return copy(ti, dst);
        if (d == "F32" && dst.dtype == DType::f64)
            return convert(dst.data<double>(), [&](std::size_t i) { return detail::load_unaligned<float>(src, i); });
        if ((d == "BF16" || d == "F16") && (dst.dtype == DType::f32 || dst.dtype == DType::f64)) {
            bool is_bf16 = d == "BF16";
            auto load = [&](std::size_t i) {
                std::uint16_t h = detail::load_unaligned<std::uint16_t>(src, i);
                if (!is_bf16) return detail::f16_to_f32(h);
                bf16 b;
                b.bits = h;
                return float(b);
            };
            if (dst.dtype == DType::f32) return convert(dst.data<float>(), load);
            return convert(dst.data<double>(), load);
        }
        if (d == "I64" && dst.dtype == DType::i32) {
            std::int32_t* out = dst.data<std::int32_t>();
            for (std::size_t i = 0; i < n; ++i) {
                std::int64_t v = detail::load_unaligned<std::int64_t>(src, i);
                MT_CHECK(v >= std::numeric_limits<std::int32_t>::min() && v <= std::numeric_limits<std::int32_t>::max(),
                         where_, ": tensor \"", name, "\" element ", i, " is ", v, ", outside the range of i32");
                out[i] = std::int32_t(v);
            }
            return;
        }
        detail::fail(where_, ": tensor \"", name, "\" is ", d, ", cannot be read into a ", dtype_name(dst.dtype), " tensor");
    }

private:
    static void copy(const TensorInfo& ti, const Tensor& dst) {
        if (ti.bytes) std::memcpy(dst.ptr, ti.data, ti.bytes);
    }

    void parse() {
        namespace nj = nlohmann;
        const std::size_t size = file_.size();
        MT_CHECK(size >= 8, where_, ": file is ", size, " bytes, too short for the 8-byte header length of a safetensors file");
        std::uint64_t n = detail::load_unaligned<std::uint64_t>(file_.data(), 0);
        // The reference implementation refuses headers above 100 MB; a larger value means corruption.
        MT_CHECK(n <= size - 8, where_, ": header length ", n, " goes beyond the end of the file (", size,
                 " bytes): not a safetensors file, or truncated");
        MT_CHECK(n <= (std::uint64_t(100) << 20), where_, ": header length ", n, " exceeds the 100 MB limit");
        const char* hbegin = reinterpret_cast<const char*>(file_.data()) + 8;
        const std::byte* buffer = file_.data() + 8 + n;
        const std::size_t buffer_size = size - 8 - std::size_t(n);

        const nj::json header = detail::parse_json(std::string_view(hbegin, std::size_t(n)), where_ + ": header");
        MT_CHECK(header.is_object(), where_, ": header must be a JSON object, found ", header.type_name());

        struct Span {
            std::uint64_t begin, end;
            const std::string* name;
        };
        std::vector<Span> spans;
        for (auto item = header.begin(); item != header.end(); ++item) {
            // Named variables, not a structured binding: clang < 16 cannot capture bindings in lambdas.
            const std::string& key = item.key();
            const nj::json& val = item.value();
            if (key == "__metadata__") {
                MT_CHECK(val.is_object(), where_, ": __metadata__ must be an object of strings, found ", val.type_name());
                for (auto m = val.begin(); m != val.end(); ++m) {
                    MT_CHECK(m.value().is_string(), where_, ": __metadata__ entry \"", m.key(), "\" must be a string, found ",
                             m.value().type_name());
                    metadata_[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            auto bad = [&](auto&&... what) { detail::fail(where_, ": tensor \"", key, "\": ", what...); };
            if (!val.is_object()) bad("entry must be an object, found ", val.type_name());
            for (const char* field : {"dtype", "shape", "data_offsets"})
                if (!val.contains(field)) bad("missing \"", field, "\"");

            TensorInfo ti;
            ti.name = key;
            const auto& jd = val["dtype"];
            if (!jd.is_string()) bad("dtype must be a string, found ", jd.type_name());
            ti.dtype = jd.get<std::string>();
            std::size_t esize = detail::safetensors_dtype_size(ti.dtype);
            if (!esize) bad("unknown dtype \"", ti.dtype, "\"");

            const auto& js = val["shape"];
            if (!js.is_array()) bad("shape must be an array, found ", js.type_name());
            std::uint64_t numel = 1;
            for (const auto& dim : js) {
                if (!dim.is_number_unsigned()) bad("shape ", js.dump(), " must hold non-negative integers");
                std::uint64_t v = dim.get<std::uint64_t>();
                if (v > std::uint64_t(std::numeric_limits<std::int64_t>::max()) || __builtin_mul_overflow(numel, v, &numel))
                    bad("shape ", js.dump(), " is too large");
                ti.shape.push_back(std::int64_t(v));
            }
            std::uint64_t nbytes;
            if (__builtin_mul_overflow(numel, std::uint64_t(esize), &nbytes)) bad("shape ", js.dump(), " is too large");

            const auto& jo = val["data_offsets"];
            if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
                bad("data_offsets must be [begin, end] with non-negative integers, found ", jo.dump());
            std::uint64_t b = jo[0].get<std::uint64_t>(), e = jo[1].get<std::uint64_t>();
            if (b > e) bad("data_offsets [", b, ", ", e, "] end before they begin");
            if (e > buffer_size)
                bad("data_offsets [", b, ", ", e, "] go beyond the data buffer (", buffer_size,
                    " bytes): the file is truncated or the offsets are corrupt");
            if (e - b != nbytes)
                bad("data_offsets [", b, ", ", e, "] span ", e - b, " bytes, but ", ti.dtype, " ",
                    detail::shape_str(ti.shape), " needs ", nbytes);
            ti.data = buffer + b;
            ti.bytes = std::size_t(nbytes);
            auto [it, inserted] = tensors_.emplace(key, std::move(ti));
            spans.push_back({b, e, &it->first});
        }

        // The tensors must tile [0, buffer_size) exactly: an overlap means two tensors share bytes, a gap or
        // a short total means the offsets are corrupt or the file was cut or padded.
        std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
            return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : *a.name < *b.name;
        });
        std::uint64_t at = 0;
        const std::string* prev = nullptr;
        for (const Span& s : spans) {
            if (s.begin < at)
                detail::fail(where_, ": tensor \"", *s.name, "\" (data_offsets [", s.begin, ", ", s.end,
                             "]) overlaps tensor \"", *prev, "\" (which ends at ", at, ")");
            if (s.begin > at)
                detail::fail(where_, ": tensor \"", *s.name, "\" starts at ", s.begin, " but the previous tensor",
                             prev ? " \"" + *prev + "\"" : std::string(), " ends at ", at,
                             ": the data buffer has a gap");
            at = s.end;
            prev = s.name;
            names_.push_back(*s.name);
        }
        if (at != buffer_size)
            detail::fail(where_, ": the tensors cover ", at, " bytes of data but the data buffer holds ", buffer_size,
                         " bytes", prev ? " (last tensor \"" + *prev + "\")" : std::string(),
                         ": the file has trailing bytes or corrupt offsets");
    }

    MappedFile file_;
    std::string where_;
    std::map<std::string, TensorInfo> tensors_;
    std::vector<std::string> names_;
    std::map<std::string, std::string> metadata_;
};

/// Opens a torch.save() state dict (*.pth, pytorch_model.bin) as a SafeTensors; defined in
/// io/torch_pickle.hpp, which this header includes at its end.
inline SafeTensors read_torch_state_dict(const std::filesystem::path& path);

/// The weights of a model folder: DIR/model.safetensors, or the shards listed by
/// DIR/model.safetensors.index.json ({"weight_map": {"<tensor>": "model-00001-of-00002.safetensors", ...}}),
/// as transformers' save_pretrained writes them above its shard size (modeling_utils.py). A folder with
/// neither is read from transformers' older pickle files, DIR/pytorch_model.bin or the shards of
/// DIR/pytorch_model.bin.index.json (same layout), through io/torch_pickle.hpp's safe reader. DIR may
/// also be one weights file: a .safetensors, or a torch.save() state dict (MiniMind's out/*.pth). A
/// tensor found in two shards, a shard outside the folder, or a shard that holds a tensor the index does
/// not list is an Error naming the file.
class SafeTensorsFolder {
public:
    explicit SafeTensorsFolder(const std::filesystem::path& dir) {
        namespace fs = std::filesystem;
        std::error_code ec;
        auto open = [](const fs::path& f) {
            if (f.extension() == ".safetensors") return std::make_unique<SafeTensors>(f);
            return std::make_unique<SafeTensors>(read_torch_state_dict(f));
        };
        fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
        if (fs::is_regular_file(dir, ec)) {
            single = dir, index.clear();
        } else if (!fs::exists(single, ec) && !fs::exists(index, ec) &&
                   (fs::exists(dir / "pytorch_model.bin", ec) || fs::exists(dir / "pytorch_model.bin.index.json", ec))) {
            single = dir / "pytorch_model.bin", index = dir / "pytorch_model.bin.index.json";
        }
        if (index.empty() || fs::exists(single, ec) || !fs::exists(index, ec)) {
            files_.push_back(open(single));
            where_text_ = single.string();
        } else {
            where_text_ = index.string();
            const nlohmann::json j = detail::read_json(index);
            MT_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index.string(),
                     ": weight_map is missing or not an object");
            std::map<std::string, std::size_t> shard_of_file;
            std::map<std::string, std::string> listed;  // tensor -> shard, as the index says
            for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
                MT_CHECK(it->is_string(), index.string(), ": weight_map[\"", it.key(), "\"] must be a file name");
                const std::string f = it->get<std::string>();
                MT_CHECK(f.find('/') == std::string::npos && f.find('\\') == std::string::npos && f != ".." &&
                             f != "." && !f.empty(),
                         index.string(), ": weight_map[\"", it.key(), "\"] = \"", f, "\" is not a file of the folder");
                listed[it.key()] = f;
                if (!shard_of_file.count(f)) {
                    shard_of_file[f] = files_.size();
                    files_.push_back(open(dir / f));
                }
            }
            for (const auto& [f, i] : shard_of_file)
                for (const auto& n : files_[i]->names()) {
                    auto at = listed.find(n);
                    MT_CHECK(at != listed.end() && at->second == f, files_[i]->path().string(), ": tensor \"", n,
                             "\" is in this shard, but ", index.string(),
                             at == listed.end() ? std::string(" does not list it") : " places it in " + at->second);
                }
            for (const auto& [n, f] : listed)
                MT_CHECK(files_[shard_of_file[f]]->contains(n), index.string(), ": weight_map[\"", n, "\"] = \"", f,
                         "\", but that shard has no such tensor");
        }
        for (std::size_t i = 0; i < files_.size(); ++i)
            for (const auto& n : files_[i]->names()) {
                MT_CHECK(!where_.count(n), files_[i]->path().string(), ": tensor \"", n, "\" is also in another shard");
                where_[n] = i;
                names_.push_back(n);
            }
    }
    bool contains(const std::string& n) const { return where_.count(n) != 0; }
    /// The file that holds tensor n (read it with file(n).read_into(n, dst)).
    const SafeTensors& file(const std::string& n) const {
        MT_CHECK(contains(n), files_[0]->path().parent_path().string(), ": no tensor \"", n, "\"");
        return *files_[where_.at(n)];
    }
    /// Every tensor name, shard by shard, each shard in data order.
    const std::vector<std::string>& names() const { return names_; }
    std::size_t shards() const { return files_.size(); }
    /// The file to name in a message about the folder's weights as a whole: model.safetensors, or the index.
    const std::string& where() const { return where_text_; }

private:
    std::string where_text_;
    std::vector<std::unique_ptr<SafeTensors>> files_;  // SafeTensors holds a mapping: not moved
    std::map<std::string, std::size_t> where_;
    std::vector<std::string> names_;
};

/// A tensor with the name it is saved under.
struct NamedTensor {
    std::string name;
    Tensor tensor;
    /// The dtype written to the header when it is not the tensor's own: "F16" for IEEE halves held in a
    /// 2-byte tensor (DType has no f16; save_pretrained's --save_dtype f16). Must have the same size.
    const char* file_dtype = nullptr;
};

/// Writes CPU tensors (f32, f64, bf16, i32) to a safetensors file, in the given order, atomically (see
/// write_file_atomic). The header is padded with spaces to a multiple of 8 bytes, as the reference writer
/// does, so that the data buffer starts 8-byte aligned.
inline void save_safetensors(const std::filesystem::path& path, const std::vector<NamedTensor>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
    const std::string where = path.string();
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
        auto& m = header["__metadata__"] = nlohmann::ordered_json::object();
        for (auto& [k, v] : metadata) m[k] = v;
    }
    std::uint64_t offset = 0;
    for (const NamedTensor& nt : tensors) {
        const Tensor& t = nt.tensor;
        MT_CHECK(!nt.name.empty() && nt.name != "__metadata__", where, ": invalid tensor name \"", nt.name, "\"");
        MT_CHECK(!header.contains(nt.name), where, ": tensor \"", nt.name, "\" is given twice");
        MT_CHECK(t.device == Device::cpu, where, ": tensor \"", nt.name, "\" is on ", device_name(t.device),
                 "; copy it to a host tensor before saving");
        MT_CHECK(t.ptr != nullptr || t.numel() == 0, where, ": tensor \"", nt.name, "\" has no storage");
        auto& e = header[nt.name] = nlohmann::ordered_json::object();
        MT_CHECK(!nt.file_dtype || detail::safetensors_dtype_size(nt.file_dtype) == dtype_size(t.dtype), where,
                 ": tensor \"", nt.name, "\": file dtype ", nt.file_dtype ? nt.file_dtype : "", " does not have the size of ",
                 dtype_name(t.dtype));
        e["dtype"] = nt.file_dtype ? nt.file_dtype : detail::safetensors_dtype_name(t.dtype);
        e["shape"] = std::vector<std::int64_t>(t.shape.dims.begin(), t.shape.dims.begin() + t.shape.rank);
        e["data_offsets"] = nlohmann::ordered_json::array({offset, offset + std::uint64_t(t.bytes())});
        offset += t.bytes();
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const nlohmann::json::exception& e) {
        detail::fail(where, ": cannot encode the header (tensor names and metadata must be UTF-8): ", e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');

    write_file_atomic(path, [&](std::ostream& os) {
        unsigned char len[8];
        std::uint64_t n = text.size();
        for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
        os.write(reinterpret_cast<const char*>(len), 8);
        os.write(text.data(), std::streamsize(text.size()));
        for (const NamedTensor& nt : tensors)
            if (nt.tensor.bytes()) os.write(static_cast<const char*>(nt.tensor.ptr), std::streamsize(nt.tensor.bytes()));
    });
}

}  // namespace minitrain

// read_torch_state_dict's definition (it needs SafeTensors, above).
#include "torch_pickle.hpp"
