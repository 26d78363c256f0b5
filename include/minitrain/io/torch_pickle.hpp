// minitrain/io/torch_pickle.hpp
// Reading PyTorch's torch.save() state dicts (MiniMind's *.pth, transformers' pytorch_model.bin) without
// Python and without executing anything. Since PyTorch 1.6 torch.save writes a zip archive:
//
//   <prefix>/data.pkl     the object, pickled (protocol 2); tensors appear as calls of
//                         torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
//                         where `storage` is a persistent id ('storage', torch.FloatStorage, '<key>', 'cpu', numel)
//   <prefix>/data/<key>   each storage's raw bytes, little-endian, stored (no compression)
//   <prefix>/version, <prefix>/byteorder (PyTorch >= 2.1), <prefix>/.data/serialization_id: ignored
//
// The pickle is run by a small VM that knows only the opcodes such a pickle uses and only these globals:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the storage classes
// torch.{Float,Half,BFloat16,Double,Long,Int}Storage. Any other global (the way a malicious pickle runs
// code), any other opcode, a compressed or encrypted zip entry, the legacy pre-1.6 format, zip64, a
// tensor whose strides are not row-major contiguous, or a storage too short for its tensor is an Error
// naming the file and what was found. The result is a SafeTensors (the same checks and dtype conversions
// as a safetensors file) whose tensors point into the mapped archive.
//
// Opcode semantics follow CPython's Lib/pickle.py; the zip layout follows PKWARE's APPNOTE.TXT (local
// file header 0x04034b50, central directory header 0x02014b50, end of central directory 0x06054b50).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "mmap.hpp"
#include "safetensors.hpp"

namespace minitrain {

namespace detail {

// ---- zip (stored entries only) --------------------------------------------------------------------

struct ZipEntry {
    std::string name;
    const std::byte* data = nullptr;  // into the mapping
    std::size_t size = 0;
};

inline std::uint32_t crc32(const std::byte* p, std::size_t n) {
    static const auto table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    std::uint32_t c = 0xffffffffu;
    for (std::size_t i = 0; i < n; ++i) c = table[(c ^ std::uint32_t(p[i])) & 0xffu] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/// Every entry of a zip archive held in `bytes`, from its central directory. Only stored (method 0),
/// unencrypted entries whose CRC-32 matches are accepted; `where` names the file in messages.
inline std::vector<ZipEntry> zip_entries(const std::byte* bytes, std::size_t size, const std::string& where) {
    auto u16 = [&](std::size_t at) { return load_unaligned<std::uint16_t>(bytes + at, 0); };
    auto u32 = [&](std::size_t at) { return load_unaligned<std::uint32_t>(bytes + at, 0); };
    // The end-of-central-directory record is the last 22 bytes, or earlier by a comment of up to 64 KiB.
    MT_CHECK(size >= 22, where, ": ", size, " bytes, too short for a zip archive (torch.save's format)");
    std::size_t eocd = std::string::npos;
    for (std::size_t back = 0; back <= 0xffff && back + 22 <= size; ++back) {
        const std::size_t at = size - 22 - back;
        if (u32(at) == 0x06054b50u && u16(at + 20) == back) {
            eocd = at;
            break;
        }
    }
    MT_CHECK(eocd != std::string::npos, where, ": no zip end-of-central-directory record: not a torch.save() zip "
             "archive (the legacy pre-1.6 format is not read: re-save with a current PyTorch), or truncated");
    const std::uint32_t count = u16(eocd + 10), cd_size = u32(eocd + 12), cd_offset = u32(eocd + 16);
    MT_CHECK(count != 0xffff && cd_size != 0xffffffffu && cd_offset != 0xffffffffu, where,
             ": a zip64 archive (above 4 GiB or 65535 entries), which minitrain does not read; save the weights as "
             "safetensors instead");
    MT_CHECK(u16(eocd + 4) == 0 && u16(eocd + 6) == 0 && u16(eocd + 8) == count, where,
             ": a multi-disk zip archive is not a torch.save() file");
    MT_CHECK(std::uint64_t(cd_offset) + cd_size <= eocd, where, ": the zip central directory (offset ", cd_offset,
             ", ", cd_size, " bytes) goes beyond its end record at ", eocd, ": truncated or corrupt");
    std::vector<ZipEntry> out;
    std::size_t at = cd_offset;
    const std::size_t cd_end = std::size_t(cd_offset) + cd_size;
    for (std::uint32_t i = 0; i < count; ++i) {
        MT_CHECK(at + 46 <= cd_end && u32(at) == 0x02014b50u, where, ": zip central directory entry ", i,
                 " is missing or corrupt");
        const std::uint16_t flags = u16(at + 8), method = u16(at + 10);
        const std::uint32_t crc = u32(at + 16), csize = u32(at + 20), usize = u32(at + 24), local = u32(at + 42);
        const std::size_t nlen = u16(at + 28), elen = u16(at + 30), clen = u16(at + 32);
        MT_CHECK(at + 46 + nlen + elen + clen <= cd_end, where, ": zip central directory entry ", i, " is truncated");
        ZipEntry e;
        e.name.assign(reinterpret_cast<const char*>(bytes + at + 46), nlen);
        at += 46 + nlen + elen + clen;
        MT_CHECK(!(flags & 1u), where, ": zip entry \"", e.name, "\" is encrypted");
        MT_CHECK(method == 0, where, ": zip entry \"", e.name, "\" is compressed (method ", method,
                 method == 8 ? ", deflate" : "", "); torch.save stores its entries uncompressed: this archive was "
                 "repacked; unzip and re-zip it with -0, or save the weights as safetensors");
        MT_CHECK(csize == usize && csize != 0xffffffffu, where, ": zip entry \"", e.name, "\" has sizes ", csize, " / ",
                 usize, " (stored entries have equal sizes; 0xffffffff means zip64)");
        MT_CHECK(std::uint64_t(local) + 30 <= cd_offset && u32(local) == 0x04034b50u, where, ": zip entry \"", e.name,
                 "\": no local file header at offset ", local);
        const std::size_t data = std::size_t(local) + 30 + u16(local + 26) + u16(local + 28);
        MT_CHECK(std::uint64_t(data) + csize <= cd_offset, where, ": zip entry \"", e.name, "\" (", csize,
                 " bytes at offset ", data, ") goes beyond the archive's data: truncated or corrupt");
        e.data = bytes + data;
        e.size = csize;
        MT_CHECK(crc32(e.data, e.size) == crc, where, ": zip entry \"", e.name,
                 "\" fails its CRC-32 check: the file is corrupt");
        out.push_back(std::move(e));
    }
    return out;
}

// ---- pickle VM ------------------------------------------------------------------------------------

struct PyObj;
using PyRef = PyObj*;  // owned by the PickleResult's arena: a pickle can build cycles (a list appended to itself)

/// A storage named by a persistent id: its element type (safetensors spelling), key and element count.
struct PyStorage {
    std::string dtype, key;
    std::int64_t numel = 0;
};
/// A tensor view of a storage (torch._utils._rebuild_tensor_v2's arguments).
struct PyTensor {
    PyStorage storage;
    std::int64_t offset = 0;
    std::vector<std::int64_t> size, stride;
};
struct PyGlobal {
    std::string module, name;
};
struct PyMark {};
using PyList = std::vector<PyRef>;
struct PyTuple {
    std::vector<PyRef> items;
};
struct PyDict {
    std::vector<std::pair<PyRef, PyRef>> items;  // insertion order (OrderedDict's, and dict's since 3.7)
};

struct PyObj {
    std::variant<std::monostate, bool, std::int64_t, double, std::string, PyTuple, PyList, PyDict, PyGlobal,
                 PyStorage, PyTensor, PyMark>
        v;
};

/// What a pickle built: every object it made (freed together, cycles or not) and the one STOP returned.
struct PickleResult {
    std::vector<std::unique_ptr<PyObj>> arena;
    PyRef root = nullptr;
};

inline const char* py_kind(const PyObj& o) {
    static const char* const names[] = {"None",   "bool",   "int",     "float",  "str",   "tuple",
                                        "list",   "dict",   "global",  "storage", "tensor", "mark"};
    return names[o.v.index()];
}

/// The torch storage classes a state dict may name, with the safetensors dtype of their elements.
inline const char* torch_storage_dtype(std::string_view name) {
    if (name == "FloatStorage") return "F32";
    if (name == "HalfStorage") return "F16";
    if (name == "BFloat16Storage") return "BF16";
    if (name == "DoubleStorage") return "F64";
    if (name == "LongStorage") return "I64";
    if (name == "IntStorage") return "I32";
    return nullptr;
}

/// Runs the pickle `p` (n bytes) and returns the object it builds. `where` names the file in messages.
inline PickleResult run_torch_pickle(const std::byte* p, std::size_t n, const std::string& where) {
    PickleResult out;
    std::vector<PyRef> stack;
    std::map<std::uint32_t, PyRef> memo;
    std::size_t at = 0;
    auto bad = [&](auto&&... what) -> void { fail(where, ": pickle byte ", at, ": ", what...); };
    auto need = [&](std::size_t k) {
        if (n - at < k) bad("truncated (", k, " more bytes needed)");
    };
    auto byte = [&] {
        need(1);
        return std::uint8_t(p[at++]);
    };
    auto le = [&]<class T>(T) {
        need(sizeof(T));
        T v = load_unaligned<T>(p + at, 0);
        at += sizeof(T);
        return v;
    };
    auto text = [&](std::size_t len) {
        need(len);
        std::string s(reinterpret_cast<const char*>(p + at), len);
        at += len;
        return s;
    };
    auto line = [&] {
        std::size_t end = at;
        while (end < n && p[end] != std::byte('\n')) ++end;
        if (end == n) bad("unterminated GLOBAL name");
        std::string s = text(end - at);
        ++at;
        return s;
    };
    auto make = [&](auto v) {
        out.arena.push_back(std::make_unique<PyObj>());
        out.arena.back()->v = std::move(v);
        return out.arena.back().get();
    };
    auto pop = [&] {
        if (stack.empty()) bad("stack underflow");
        PyRef r = stack.back();
        stack.pop_back();
        if (std::holds_alternative<PyMark>(r->v)) bad("unexpected MARK");
        return r;
    };
    auto top = [&]() -> PyRef& {
        if (stack.empty() || std::holds_alternative<PyMark>(stack.back()->v)) bad("stack underflow");
        return stack.back();
    };
    // The items above the topmost MARK, which is removed.
    auto pop_mark = [&] {
        std::size_t m = stack.size();
        while (m > 0 && !std::holds_alternative<PyMark>(stack[m - 1]->v)) --m;
        if (m == 0) bad("no MARK on the stack");
        std::vector<PyRef> items(stack.begin() + std::ptrdiff_t(m), stack.end());
        stack.resize(m - 1);
        return items;
    };
    auto as_int = [&](const PyRef& o, const char* what) {
        if (auto* i = std::get_if<std::int64_t>(&o->v)) return *i;
        if (auto* b = std::get_if<bool>(&o->v)) return std::int64_t(*b);
        bad(what, " must be an int, found ", py_kind(*o));
        return std::int64_t(0);
    };
    auto int_tuple = [&](const PyRef& o, const char* what) {
        auto* t = std::get_if<PyTuple>(&o->v);
        if (!t) bad(what, " must be a tuple, found ", py_kind(*o));
        std::vector<std::int64_t> out;
        for (const auto& x : t->items) out.push_back(as_int(x, what));
        return out;
    };
    auto set_items = [&](PyRef& target, std::vector<PyRef>& kv) {
        auto* d = std::get_if<PyDict>(&target->v);
        if (!d) bad("SETITEM(S) on a ", py_kind(*target), ", expected a dict");
        if (kv.size() % 2) bad("SETITEMS with an odd number of items");
        for (std::size_t i = 0; i < kv.size(); i += 2) d->items.emplace_back(kv[i], kv[i + 1]);
    };
    constexpr std::size_t max_depth = 1 << 20;  // a pickle of a state dict is shallow; this bounds memory

    while (true) {
        if (stack.size() > max_depth) bad("stack deeper than ", max_depth);
        const std::size_t op_at = at;
        const std::uint8_t op = byte();
        switch (op) {
            case 0x80: {  // PROTO
                const std::uint8_t v = byte();
                if (v > 5) bad("pickle protocol ", int(v), " is unknown");
                break;
            }
            case 0x95: le(std::uint64_t{}); break;  // FRAME (protocol 4): a length hint only
            case '.': {                            // STOP
                PyRef r = pop();
                if (!stack.empty()) bad("STOP with ", stack.size(), " objects left on the stack");
                out.root = r;
                return out;
            }
            case '(': stack.push_back(make(PyMark{})); break;
            case 'N': stack.push_back(make(std::monostate{})); break;
            case 0x88: stack.push_back(make(true)); break;   // NEWTRUE
            case 0x89: stack.push_back(make(false)); break;  // NEWFALSE
            case 'J': stack.push_back(make(std::int64_t(le(std::int32_t{})))); break;   // BININT
            case 'K': stack.push_back(make(std::int64_t(byte()))); break;               // BININT1
            case 'M': stack.push_back(make(std::int64_t(le(std::uint16_t{})))); break;  // BININT2
            case 0x8a: {                                                                // LONG1
                const std::uint8_t len = byte();
                if (len > 8) bad("LONG1 of ", int(len), " bytes (only 64-bit integers are read)");
                need(len);
                std::uint64_t v = 0;
                for (std::uint8_t i = 0; i < len; ++i) v |= std::uint64_t(std::uint8_t(p[at + i])) << (8 * i);
                if (len > 0 && len < 8 && (std::uint8_t(p[at + len - 1]) & 0x80)) v |= ~std::uint64_t(0) << (8 * len);
                at += len;
                stack.push_back(make(std::int64_t(v)));
                break;
            }
            case 'G': {  // BINFLOAT: big-endian double
                need(8);
                std::uint64_t bits = 0;
                for (int i = 0; i < 8; ++i) bits = (bits << 8) | std::uint8_t(p[at + std::size_t(i)]);
                at += 8;
                double d;
                std::memcpy(&d, &bits, 8);
                stack.push_back(make(d));
                break;
            }
            case 'X': stack.push_back(make(text(le(std::uint32_t{})))); break;  // BINUNICODE
            case 0x8c: stack.push_back(make(text(byte()))); break;             // SHORT_BINUNICODE
            case 'U': stack.push_back(make(text(byte()))); break;              // SHORT_BINSTRING
            case 'T': stack.push_back(make(text(le(std::uint32_t{})))); break;  // BINSTRING
            case ')': stack.push_back(make(PyTuple{})); break;                 // EMPTY_TUPLE
            case ']': stack.push_back(make(PyList{})); break;                  // EMPTY_LIST
            case '}': stack.push_back(make(PyDict{})); break;                  // EMPTY_DICT
            case 't': stack.push_back(make(PyTuple{pop_mark()})); break;       // TUPLE
            case 0x85: case 0x86: case 0x87: {                                 // TUPLE1..3
                PyTuple t;
                t.items.resize(std::size_t(op - 0x84));
                for (auto it = t.items.rbegin(); it != t.items.rend(); ++it) *it = pop();
                stack.push_back(make(std::move(t)));
                break;
            }
            case 'a': {  // APPEND
                PyRef v = pop();
                auto* l = std::get_if<PyList>(&top()->v);
                if (!l) bad("APPEND to a ", py_kind(*top()));
                l->push_back(v);
                break;
            }
            case 'e': {  // APPENDS
                auto items = pop_mark();
                auto* l = std::get_if<PyList>(&top()->v);
                if (!l) bad("APPENDS to a ", py_kind(*top()));
                for (auto v : items) l->push_back(v);
                break;
            }
            case 's': {  // SETITEM
                std::vector<PyRef> kv(2);
                kv[1] = pop();
                kv[0] = pop();
                set_items(top(), kv);
                break;
            }
            case 'u': {  // SETITEMS
                auto kv = pop_mark();
                set_items(top(), kv);
                break;
            }
            case 'q': memo[byte()] = top(); break;                // BINPUT
            case 'r': memo[le(std::uint32_t{})] = top(); break;   // LONG_BINPUT
            case 0x94: memo[std::uint32_t(memo.size())] = top(); break;  // MEMOIZE
            case 'h': case 'j': {                                  // BINGET, LONG_BINGET
                const std::uint32_t k = op == 'h' ? byte() : le(std::uint32_t{});
                auto it = memo.find(k);
                if (it == memo.end()) bad("memo ", k, " was never stored");
                stack.push_back(it->second);
                break;
            }
            case 'c': {  // GLOBAL "module\nname\n": only the names a state dict uses; nothing is imported
                std::string module = line(), name = line();
                const bool ok = (module == "collections" && name == "OrderedDict") ||
                                (module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter")) ||
                                (module == "torch" && torch_storage_dtype(name));
                if (!ok)
                    fail(where, ": the pickle names the global ", module, ".", name,
                         " at byte ", op_at, ", which a state dict of tensors does not use: refused (a pickle can run code "
                         "through its globals; minitrain reads only OrderedDict, _rebuild_tensor_v2, _rebuild_parameter and "
                         "torch's storage classes)");
                stack.push_back(make(PyGlobal{std::move(module), std::move(name)}));
                break;
            }
            case 'Q': {  // BINPERSID: ('storage', <storage class>, key, location, numel)
                PyRef pid = pop();
                auto* t = std::get_if<PyTuple>(&pid->v);
                if (!t || t->items.size() != 5) bad("persistent id must be a 5-tuple ('storage', type, key, location, numel)");
                auto* tag = std::get_if<std::string>(&t->items[0]->v);
                auto* type = std::get_if<PyGlobal>(&t->items[1]->v);
                auto* key = std::get_if<std::string>(&t->items[2]->v);
                if (!tag || *tag != "storage" || !type || !key) bad("persistent id is not ('storage', type, key, ...)");
                const char* dt = type->module == "torch" ? torch_storage_dtype(type->name) : nullptr;
                if (!dt) bad("persistent id names ", type->module, ".", type->name, ", not a storage class");
                const std::int64_t numel = as_int(t->items[4], "a storage's element count");
                if (numel < 0) bad("storage \"", *key, "\" has ", numel, " elements");
                stack.push_back(make(PyStorage{dt, *key, numel}));
                break;
            }
            case 'R': {  // REDUCE: callable(*args), for the allowed globals only
                PyRef args_ref = pop(), fn_ref = pop();
                auto* fn = std::get_if<PyGlobal>(&fn_ref->v);
                auto* args = std::get_if<PyTuple>(&args_ref->v);
                if (!fn) bad("REDUCE calls a ", py_kind(*fn_ref), ", not a global");
                if (!args) bad("REDUCE arguments must be a tuple, found ", py_kind(*args_ref));
                const auto& a = args->items;
                if (fn->name == "OrderedDict") {
                    if (!a.empty()) bad("OrderedDict called with ", a.size(), " arguments");
                    stack.push_back(make(PyDict{}));
                } else if (fn->name == "_rebuild_tensor_v2") {
                    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                    if (a.size() != 6 && a.size() != 7) bad("_rebuild_tensor_v2 called with ", a.size(), " arguments");
                    auto* s = std::get_if<PyStorage>(&a[0]->v);
                    if (!s) bad("_rebuild_tensor_v2's storage is a ", py_kind(*a[0]));
                    PyTensor t{*s, as_int(a[1], "storage_offset"), int_tuple(a[2], "size"), int_tuple(a[3], "stride")};
                    if (t.size.size() != t.stride.size()) bad("tensor size and stride have different ranks");
                    stack.push_back(make(std::move(t)));
                } else if (fn->name == "_rebuild_parameter") {  // (tensor, requires_grad, backward_hooks)
                    if (a.size() != 3 || !std::holds_alternative<PyTensor>(a[0]->v))
                        bad("_rebuild_parameter must be called with (tensor, requires_grad, hooks)");
                    stack.push_back(a[0]);
                } else {
                    bad("REDUCE calls ", fn->module, ".", fn->name, ", which is not callable here");
                }
                break;
            }
            case 'b': {  // BUILD: OrderedDict's attribute state (a state dict's _metadata); dropped
                (void)pop();  // the state
                if (!std::holds_alternative<PyDict>(top()->v)) bad("BUILD on a ", py_kind(*top()));
                break;
            }
            default:
                fail(where, ": pickle byte ", op_at, ": opcode 0x", "0123456789abcdef"[op >> 4], "0123456789abcdef"[op & 15],
                     " is not one torch.save uses for a state dict: refused");
        }
    }
}

}  // namespace detail

// ---- state dicts ----------------------------------------------------------------------------------

/// Opens a torch.save() file holding a dict {name: tensor} (a state dict; nested dicts and other values
/// are refused, naming the key). The tensors are checked for row-major contiguity and storage bounds and
/// returned as a SafeTensors over the mapped file, in the dict's order.
inline SafeTensors read_torch_state_dict(const std::filesystem::path& path) {
    using namespace detail;
    MappedFile file(path);
    const std::string where = path.string();
    MT_CHECK(file.size() < 2 || std::to_integer<int>(file.data()[0]) != 0x80, where,
             ": a legacy (pre-1.6, non-zip) torch.save file, which minitrain does not read: re-save it with "
             "torch.save(state_dict, path) in a current PyTorch, or as safetensors");
    const std::vector<ZipEntry> entries = zip_entries(file.data(), file.size(), where);
    const ZipEntry* pkl = nullptr;
    for (const auto& e : entries) {
        const auto slash = e.name.find('/');
        if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
            MT_CHECK(!pkl, where, ": two data.pkl entries (\"", pkl ? pkl->name : "", "\", \"", e.name, "\")");
            pkl = &e;
        }
    }
    MT_CHECK(pkl, where, ": a zip archive without <name>/data.pkl: not a torch.save() file");
    const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);  // "<name>/"
    std::map<std::string, const ZipEntry*> by_name;
    for (const auto& e : entries) by_name[e.name] = &e;
    if (auto it = by_name.find(prefix + "byteorder"); it != by_name.end())
        MT_CHECK(std::string_view(reinterpret_cast<const char*>(it->second->data), it->second->size) == "little", where,
                 ": ", prefix, "byteorder is not \"little\": a big-endian save");

    const PickleResult pickle = run_torch_pickle(pkl->data, pkl->size, where + " (" + pkl->name + ")");
    const PyRef root = pickle.root;
    auto* dict = std::get_if<PyDict>(&root->v);
    MT_CHECK(dict, where, ": holds a ", py_kind(*root), ", expected a state dict ({name: tensor})");
    std::vector<SafeTensors::TensorInfo> tensors;
    for (const auto& [k, v] : dict->items) {
        auto* name = std::get_if<std::string>(&k->v);
        MT_CHECK(name, where, ": a state dict key is a ", py_kind(*k), ", expected a str");
        auto* t = std::get_if<PyTensor>(&v->v);
        MT_CHECK(t, where, ": \"", *name, "\" is a ", py_kind(*v),
                 ", expected a tensor (a training checkpoint that wraps the state dict, e.g. {'model': ...}, is not read: "
                 "save model.state_dict() alone)");
        SafeTensors::TensorInfo ti;
        ti.name = *name;
        ti.dtype = t->storage.dtype;
        ti.shape = t->size;
        const std::size_t esize = safetensors_dtype_size(ti.dtype);
        // Row-major contiguous: each stride the product of the sizes after it (a size-1 or empty dimension's
        // stride does not matter, as in torch's is_contiguous).
        std::uint64_t numel = 1;
        bool empty = false;
        for (auto d : t->size) {
            MT_CHECK(d >= 0, where, ": tensor \"", *name, "\" has size ", shape_str(t->size));
            empty |= d == 0;
        }
        std::uint64_t expect = 1;
        for (std::size_t i = t->size.size(); i-- > 0;) {
            const auto d = std::uint64_t(t->size[i]);
            MT_CHECK(d <= 1 || empty || std::uint64_t(t->stride[i]) == expect, where, ": tensor \"", *name, "\" has size ",
                     shape_str(t->size), " and stride ", shape_str(t->stride),
                     ": not row-major contiguous (a transposed or sliced view); save tensor.contiguous() instead");
            MT_CHECK(!__builtin_mul_overflow(expect, d, &expect), where, ": tensor \"", *name, "\" is too large");
        }
        numel = empty ? 0 : expect;
        const ZipEntry* e = nullptr;
        if (auto it = by_name.find(prefix + "data/" + t->storage.key); it != by_name.end()) e = it->second;
        MT_CHECK(e, where, ": tensor \"", *name, "\": its storage ", prefix, "data/", t->storage.key, " is missing");
        MT_CHECK(std::uint64_t(t->storage.numel) * esize == e->size, where, ": storage ", e->name, " holds ", e->size,
                 " bytes, but its persistent id says ", t->storage.numel, " ", ti.dtype, " elements");
        MT_CHECK(t->offset >= 0 && std::uint64_t(t->offset) <= std::uint64_t(t->storage.numel) &&
                     numel <= std::uint64_t(t->storage.numel) - std::uint64_t(t->offset),
                 where, ": tensor \"", *name, "\" (", numel, " elements at offset ", t->offset, ") goes beyond its storage ",
                 e->name, " (", t->storage.numel, " elements)");
        ti.data = e->data + std::size_t(t->offset) * esize;
        ti.bytes = std::size_t(numel) * esize;
        tensors.push_back(std::move(ti));
    }
    return SafeTensors(std::move(file), where, std::move(tensors));
}

}  // namespace minitrain
