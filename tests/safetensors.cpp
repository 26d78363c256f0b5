// safetensors reader/writer and atomic file replacement: round trips in every supported dtype, the exact
// bytes of a small file, and one test per kind of corruption, each checking that the error names the file
// (and the tensor when there is one); torch.save() files read without a pickle interpreter (io/torch_pickle.hpp):
// views, dtypes, and every refusal (strided, nested, foreign globals, deflate, legacy, corrupt bytes).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "minitrain/backend/cpu/cpu.hpp"
#include "minitrain/core/random.hpp"
#include "minitrain/io/atomic_file.hpp"
#include "minitrain/io/mmap.hpp"
#include "minitrain/io/safetensors.hpp"
#include "minitrain/io/torch_pickle.hpp"
#include "minitrain/memory/arena.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

using mt_test::TempDir;

std::vector<char> slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

void spit(const fs::path& p, const std::vector<char>& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}

/// A file with the given header text (length written as is unless overridden) and `data` bytes after it.
void write_raw(const fs::path& p, const std::string& header, const std::vector<char>& data,
               std::uint64_t length = std::uint64_t(-1)) {
    std::uint64_t n = length == std::uint64_t(-1) ? header.size() : length;
    std::vector<char> bytes(8);
    std::memcpy(bytes.data(), &n, 8);
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.insert(bytes.end(), data.begin(), data.end());
    spit(p, bytes);
}

/// The message of the Error thrown when opening `p`; fails the test if nothing is thrown.
std::string open_error(const fs::path& p) {
    try {
        SafeTensors st(p);
    } catch (const Error& e) {
        return e.what();
    }
    FAIL("opening ", p.string(), " did not throw");
    return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

template <class T>
Buffer<CPU> filled(Shape s, std::uint64_t seed) {
    Buffer<CPU> b(s, dtype_of<T>());
    Rng rng{seed};
    T* p = b.data<T>();
    for (std::int64_t i = 0; i < s.numel(); ++i) {
        if constexpr (std::is_same_v<T, std::int32_t>)
            p[i] = std::int32_t(rng.next_u64());
        else
            p[i] = T(float(rng.normal()));
    }
    return b;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
    return a.bytes() == b.bytes() && std::memcmp(a.ptr, b.ptr, a.bytes()) == 0;
}

}  // namespace

TEST_CASE("safetensors: round trip in f32, f64, bf16, i32 with metadata and the given order") {
    TempDir dir;
    auto file = dir / "model.safetensors";
    auto w = filled<float>({3, 5}, 1);
    auto d = filled<double>({2, 3, 4}, 2);
    auto h = filled<bf16>({7}, 3);
    auto ids = filled<std::int32_t>({2, 2}, 4);
    auto scalar = filled<float>({}, 5);
    Buffer<CPU> empty(Shape{0, 3}, DType::f32);
    // Deliberately not alphabetical: names() must follow the file order, which is the given order.
    std::vector<NamedTensor> tensors = {
        {"z.weight", w}, {"b.double", d}, {"m.bf16", h}, {"a.ids", ids}, {"scalar", scalar}, {"empty", empty}};
    save_safetensors(file, tensors, {{"format", "pt"}, {"step", "12"}});

    SafeTensors st(file);
    CHECK(st.names() == std::vector<std::string>{"z.weight", "b.double", "m.bf16", "a.ids", "scalar", "empty"});
    CHECK(st.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"step", "12"}});
    CHECK(st.contains("m.bf16"));
    CHECK_FALSE(st.contains("nope"));
    CHECK(st.info("z.weight").dtype == "F32");
    CHECK(st.info("b.double").dtype == "F64");
    CHECK(st.info("m.bf16").dtype == "BF16");
    CHECK(st.info("a.ids").dtype == "I32");
    CHECK(st.info("b.double").shape == std::vector<std::int64_t>{2, 3, 4});
    CHECK(st.info("scalar").shape.empty());
    CHECK(st.info("empty").bytes == 0);

    for (const NamedTensor& nt : tensors) {
        Buffer<CPU> back(nt.tensor.shape, nt.tensor.dtype);
        st.read_into(nt.name, back);
        CHECK_MESSAGE(same_bytes(back, nt.tensor), nt.name);
    }

    // Widening conversions: bf16 -> f32 and f64, f32 -> f64, exactly.
    Buffer<CPU> hf(Shape{7}, DType::f32), hd(Shape{7}, DType::f64), wd(Shape{3, 5}, DType::f64);
    st.read_into("m.bf16", hf);
    st.read_into("m.bf16", hd);
    st.read_into("z.weight", wd);
    for (int i = 0; i < 7; ++i) {
        CHECK(hf.data<float>()[i] == float(h.data<bf16>()[i]));
        CHECK(hd.data<double>()[i] == double(float(h.data<bf16>()[i])));
    }
    for (int i = 0; i < 15; ++i) CHECK(wd.data<double>()[i] == double(w.data<float>()[i]));

    // The header length is a multiple of 8 and the padding is spaces.
    auto bytes = slurp(file);
    std::uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    std::string header(bytes.data() + 8, n);
    CHECK(header.rfind("{\"__metadata__\":{\"format\":\"pt\",\"step\":\"12\"}", 0) == 0);
    CHECK(header.find_last_not_of(' ') == header.find_last_of('}'));
}

TEST_CASE("safetensors: exact bytes of a one-tensor file (the reference writer's layout)") {
    TempDir dir;
    auto file = dir / "a.safetensors";
    Buffer<CPU> a(Shape{2}, DType::f32);
    a.data<float>()[0] = 1.0f;
    a.data<float>()[1] = -2.0f;
    save_safetensors(file, {{"a", a}});
    std::string want_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    REQUIRE(want_header.size() == 54);
    want_header += "  ";  // padded to 56
    std::vector<char> want(8, 0);
    want[0] = 56;
    want.insert(want.end(), want_header.begin(), want_header.end());
    const unsigned char data[8] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0};  // 1.0f, -2.0f little-endian
    want.insert(want.end(), data, data + 8);
    CHECK(slurp(file) == want);
}

TEST_CASE("safetensors: a truncated file is an error naming the file, at every kind of cut") {
    TempDir dir;
    auto good = dir / "good.safetensors";
    auto w = filled<float>({4, 3}, 7);
    auto b = filled<float>({5}, 8);
    save_safetensors(good, {{"layer.weight", w}, {"layer.bias", b}}, {{"k", "v"}});
    auto bytes = slurp(good);
    std::uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    for (std::size_t cut : {std::size_t(0), std::size_t(3), std::size_t(7), std::size_t(8), std::size_t(8 + n / 2),
                            std::size_t(8 + n - 1), std::size_t(8 + n), std::size_t(8 + n + 4), bytes.size() - 1}) {
        CAPTURE(cut);
        auto cutf = dir / "cut.safetensors";
        spit(cutf, std::vector<char>(bytes.begin(), bytes.begin() + std::ptrdiff_t(cut)));
        std::string msg = open_error(cutf);
        CHECK(contains(msg, "cut.safetensors"));
        if (cut >= 8 + n) CHECK(contains(msg, "tensor \"layer."));  // header intact: the tensor that lost data
    }
    // The full file still opens; one extra byte at the end is an error too.
    CHECK_NOTHROW(SafeTensors{good});
    auto longer = bytes;
    longer.push_back('x');
    spit(dir / "long.safetensors", longer);
    CHECK(contains(open_error(dir / "long.safetensors"), "long.safetensors"));
}

TEST_CASE("safetensors: a corrupt header length is an error naming the file") {
    TempDir dir;
    auto good = dir / "good.safetensors";
    auto w = filled<float>({4, 3}, 9);
    save_safetensors(good, {{"w", w}});
    auto bytes = slurp(good);
    std::uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    for (std::uint64_t bad : {std::uint64_t(0), n + 3, n + 100000, ~std::uint64_t(0), std::uint64_t(1) << 56}) {
        CAPTURE(bad);
        auto f = dir / "len.safetensors";
        auto copy = bytes;
        std::memcpy(copy.data(), &bad, 8);
        spit(f, copy);
        CHECK(contains(open_error(f), "len.safetensors"));
    }
}

TEST_CASE("safetensors: each malformed header is an error naming the file and the tensor") {
    TempDir dir;
    auto f = dir / "bad.safetensors";
    std::vector<char> d16(16, 1), d24(24, 1), d8(8, 1);
    auto expect = [&](const std::string& header, const std::vector<char>& data, std::vector<std::string> parts) {
        CAPTURE(header);
        write_raw(f, header, data);
        std::string msg = open_error(f);
        CAPTURE(msg);
        CHECK(contains(msg, "bad.safetensors"));
        for (auto& p : parts) CHECK(contains(msg, p));
    };
    expect("{not json", d8, {"not valid JSON"});
    expect("[1, 2]", d8, {"JSON object"});
    expect(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", d8, {"\"w\"", "dtype"});
    expect(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", d8, {"\"w\"", "shape"});
    expect(R"({"w":{"dtype":"F32","shape":[2]}})", d8, {"\"w\"", "data_offsets"});
    expect(R"({"w":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", d8, {"\"w\"", "unknown dtype \"F31\""});
    expect(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8, {"\"w\"", "non-negative"});
    expect(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8, {"\"w\""});
    expect(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", d8, {"\"w\"", "data_offsets"});
    // Out of range: the data buffer holds 8 bytes, the tensor claims 16.
    expect(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d8, {"\"w\"", "beyond the data buffer"});
    // Size mismatch: 3 f32 need 12 bytes, the offsets span 16.
    expect(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", d16, {"\"w\"", "needs 12"});
    // Overlap: b starts inside a.
    expect(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
           d24, {"\"a\"", "\"b\"", "overlaps"});
    // Gap between tensors, and bytes after the last tensor.
    expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
           d24, {"\"b\"", "gap"});
    expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d16, {"\"a\"", "trailing"});
    expect(R"({"__metadata__":{"step":12},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d8,
           {"__metadata__", "\"step\""});
    // An overflowing shape must not wrap around into a plausible byte count.
    expect(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", {}, {"\"w\"", "too large"});
    // Nesting is limited to json_max_depth (128) levels: an ignored extra field at level 128 is fine, at 129 not.
    auto with_extra = [](int levels) {
        return R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":)" + std::string(std::size_t(levels), '[') +
               std::string(std::size_t(levels), ']') + "}}";
    };
    write_raw(f, with_extra(126), d8);
    CHECK(SafeTensors(f).names() == std::vector<std::string>{"w"});
    expect(with_extra(127), d8, {"bad.safetensors: header: JSON nested deeper than 128 levels", "opens level 129"});
    expect(std::string(100000, '['), d8, {"bad.safetensors: header: JSON nested deeper than 128 levels"});
}

TEST_CASE("safetensors: read_into checks shape, dtype and name") {
    TempDir dir;
    auto file = dir / "model.safetensors";
    const std::string name = "model.layers.3.self_attn.q_proj.weight";
    auto q = filled<float>({64, 32}, 10);
    auto dd = filled<double>({3}, 11);
    save_safetensors(file, {{name, q}, {"d", dd}});
    SafeTensors st(file);

    Buffer<CPU> wrong(Shape{32, 32}, DType::f32);
    try {
        st.read_into(name, wrong);
        FAIL("shape mismatch not detected");
    } catch (const Error& e) {
        CHECK(std::string(e.what()) ==
              file.string() + ": tensor \"model.layers.3.self_attn.q_proj.weight\" has shape (64, 32), expected (32, 32)");
    }
    Buffer<CPU> narrow(Shape{3}, DType::f32);
    CHECK_THROWS_WITH_AS(st.read_into("d", narrow), doctest::Contains("tensor \"d\" is F64"), Error);
    Buffer<CPU> ints(Shape{64, 32}, DType::i32);
    CHECK_THROWS_WITH_AS(st.read_into(name, ints), doctest::Contains("model.safetensors"), Error);
    CHECK_THROWS_WITH_AS(st.info("lm_head.weight"), doctest::Contains("no tensor named \"lm_head.weight\""), Error);
    CHECK_THROWS_WITH_AS(st.read_into("lm_head.weight", narrow), doctest::Contains("model.safetensors"), Error);
    Tensor on_gpu = q;
    on_gpu.device = Device::cuda;
    CHECK_THROWS_WITH_AS(st.read_into(name, on_gpu), doctest::Contains("CPU destination"), Error);
}

TEST_CASE("safetensors: I64 reads into i32 with a range check, F16 converts exactly") {
    TempDir dir;
    auto f = dir / "ints.safetensors";
    std::int64_t vals[3] = {-5, 2147483647, 7};
    std::vector<char> data(reinterpret_cast<char*>(vals), reinterpret_cast<char*>(vals) + 24);
    write_raw(f, R"({"i":{"dtype":"I64","shape":[3],"data_offsets":[0,24]}})", data);
    Buffer<CPU> out(Shape{3}, DType::i32);
    SafeTensors(f).read_into("i", out);
    CHECK(out.data<std::int32_t>()[0] == -5);
    CHECK(out.data<std::int32_t>()[1] == 2147483647);
    vals[1] = std::int64_t(1) << 40;
    data.assign(reinterpret_cast<char*>(vals), reinterpret_cast<char*>(vals) + 24);
    write_raw(f, R"({"i":{"dtype":"I64","shape":[3],"data_offsets":[0,24]}})", data);
    CHECK_THROWS_WITH_AS(SafeTensors(f).read_into("i", out), doctest::Contains("element 1 is 1099511627776"), Error);

    // 1, -2.5, smallest subnormal 2^-24, largest finite 65504, +inf, -0.
    std::uint16_t halves[6] = {0x3c00, 0xc100, 0x0001, 0x7bff, 0x7c00, 0x8000};
    data.assign(reinterpret_cast<char*>(halves), reinterpret_cast<char*>(halves) + 12);
    write_raw(f, R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}})", data);
    Buffer<CPU> hf(Shape{2, 3}, DType::f32);
    SafeTensors(f).read_into("h", hf);
    const float* h = hf.data<float>();
    CHECK(h[0] == 1.0f);
    CHECK(h[1] == -2.5f);
    CHECK(h[2] == std::ldexp(1.0f, -24));
    CHECK(h[3] == 65504.0f);
    CHECK(std::isinf(h[4]));
    CHECK((h[5] == 0.0f && std::signbit(h[5])));
}

TEST_CASE("safetensors: save rejects what it cannot write, naming the file and tensor") {
    TempDir dir;
    auto file = dir / "x.safetensors";
    auto w = filled<float>({2}, 12);
    CHECK_THROWS_WITH_AS(save_safetensors(file, {{"w", w}, {"w", w}}), doctest::Contains("\"w\" is given twice"), Error);
    Tensor dev = w;
    dev.device = Device::cuda;
    CHECK_THROWS_WITH_AS(save_safetensors(file, {{"dev", dev}}), doctest::Contains("x.safetensors: tensor \"dev\""), Error);
    CHECK_FALSE(fs::exists(file));
    CHECK_THROWS_WITH_AS(save_safetensors(dir / "no_such_dir" / "y.safetensors", {{"w", w}}),
                         doctest::Contains("y.safetensors"), Error);
}

TEST_CASE("atomic write: a failing writer keeps the previous file and leaves no temporary behind") {
    TempDir dir;
    auto file = dir / "ckpt.bin";
    write_file_atomic(file, [](std::ostream& os) { os << "old contents"; });
    REQUIRE(slurp(file) == std::vector<char>{'o', 'l', 'd', ' ', 'c', 'o', 'n', 't', 'e', 'n', 't', 's'});

    std::string big(1 << 20, 'n');  // larger than the stream buffer, so some of it reaches the temp file
    try {
        write_file_atomic(file, [&](std::ostream& os) {
            os << big;
            throw std::runtime_error("disk quota simulated");
        });
        FAIL("the writer's exception was swallowed");
    } catch (const Error& e) {
        CHECK(contains(e.what(), file.string()));
        CHECK(contains(e.what(), "disk quota simulated"));
    }
    CHECK(std::string(slurp(file).data(), 12) == "old contents");
    CHECK(fs::file_size(file) == 12);
    int entries = 0;
    for (auto& e : fs::directory_iterator(dir.path)) {
        ++entries;
        CHECK(e.path().filename() == "ckpt.bin");
    }
    CHECK(entries == 1);

    // A writer that leaves the stream failed is an error too; a successful one replaces the contents.
    CHECK_THROWS_AS(write_file_atomic(file, [](std::ostream& os) { os.setstate(std::ios::failbit); }), Error);
    CHECK(fs::file_size(file) == 12);
    write_file_atomic(file, [&](std::ostream& os) { os << big; });
    CHECK(fs::file_size(file) == big.size());
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);
}

TEST_CASE("mmap: errors name the path and the reason; moves keep the mapping") {
    TempDir dir;
    CHECK_THROWS_WITH_AS(MappedFile(dir / "missing.bin"), doctest::Contains("missing.bin: cannot open for reading: No such file"),
                         Error);
    CHECK_THROWS_WITH_AS(MappedFile(dir.path), doctest::Contains("not a regular file"), Error);
    spit(dir / "empty.bin", {});
    MappedFile e(dir / "empty.bin");
    CHECK(e.size() == 0);
    spit(dir / "abc.bin", {'a', 'b', 'c'});
    MappedFile a(dir / "abc.bin");
    const std::byte* p = a.data();
    MappedFile b = std::move(a);
    CHECK(b.data() == p);
    CHECK(b.size() == 3);
    CHECK(char(b.data()[2]) == 'c');
    CHECK(a.data() == nullptr);
}

// ---- torch.save() files (io/torch_pickle.hpp), written by tests/golden/make_golden_torch.py ----------

namespace {

const fs::path torch_dir = fs::path(__FILE__).parent_path() / "golden" / "torch";

std::vector<double> torch_values(const SafeTensors& st, const std::string& name) {
    const auto& ti = st.info(name);
    Shape s;
    for (auto d : ti.shape) s.dims[std::size_t(s.rank++)] = d;
    Buffer<CPU> b(s, DType::f64);
    st.read_into(name, b);
    const double* p = b.tensor().data<double>();
    return std::vector<double>(p, p + b.tensor().numel());
}

std::string torch_error(const fs::path& p) {
    try {
        (void)read_torch_state_dict(p);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("torch.save: views at storage offsets, 0-d and empty tensors, F64 and I64, in the dict's order") {
    const SafeTensors st = read_torch_state_dict(torch_dir / "views.pth");
    CHECK(st.names() == std::vector<std::string>{"slice", "row", "block", "scalar", "empty", "f64", "i64"});
    CHECK(st.path() == torch_dir / "views.pth");
    // base = arange(24) * 0.5 - 3: element i is 0.5 i - 3.
    auto base = [](int i) { return 0.5 * i - 3.0; };
    std::vector<double> want;
    for (int i = 5; i < 11; ++i) want.push_back(base(i));
    CHECK(torch_values(st, "slice") == want);
    want.clear();
    for (int i = 12; i < 18; ++i) want.push_back(base(i));
    CHECK(torch_values(st, "row") == want);
    want.clear();
    for (int i = 6; i < 18; ++i) want.push_back(base(i));
    CHECK(st.info("block").shape == std::vector<std::int64_t>{2, 6});
    CHECK(torch_values(st, "block") == want);
    CHECK(st.info("scalar").shape.empty());
    CHECK(torch_values(st, "scalar") == std::vector<double>{7.25});
    CHECK(st.info("empty").shape == std::vector<std::int64_t>{0, 3});
    CHECK(st.info("empty").bytes == 0);
    CHECK(st.info("f64").dtype == "F64");
    CHECK(torch_values(st, "f64") == std::vector<double>{1.0 / 3.0, -2.5});
    CHECK(st.info("i64").dtype == "I64");
    Buffer<CPU> i32(Shape{3}, DType::i32);
    CHECK_THROWS_WITH_AS(st.read_into("i64", i32), doctest::Contains("element 2 is 1099511627776, outside the range of i32"),
                         Error);
}

TEST_CASE("torch.save: what a state dict of tensors is not is refused, naming the file and what was found") {
    auto e = torch_error(torch_dir / "strided.pth");
    CHECK(contains(e, "strided.pth: tensor \"transposed\" has size (6, 4) and stride (1, 6): not row-major contiguous"));
    e = torch_error(torch_dir / "nested.pth");
    CHECK(contains(e, "nested.pth: \"model\" is a dict, expected a tensor"));
    // The hostile pickle names os.system ("posix" on Linux): refused at GLOBAL, before anything is called.
    e = torch_error(torch_dir / "global.pth");
    CHECK(contains(e, "global.pth (global/data.pkl): the pickle names the global posix.system at byte "));
    CHECK(contains(e, "refused"));
    e = torch_error(torch_dir / "deflate.pth");
    CHECK(contains(e, "deflate.pth: zip entry \"minimind3_f32/data.pkl\" is compressed (method 8, deflate)"));
    e = torch_error(torch_dir / "legacy.pth");
    CHECK(contains(e, "legacy.pth: a legacy (pre-1.6, non-zip) torch.save file"));
    e = torch_error(torch_dir / "missing.pth");
    CHECK(contains(e, "missing.pth: cannot open for reading"));
}

TEST_CASE("torch.save: a corrupt or truncated archive is an error naming the file") {
    TempDir dir;
    const auto good = slurp(torch_dir / "views.pth");
    // A flipped byte in a storage: its CRC-32 fails. The storages hold 24 floats of 0.5 i - 3: find 2.5 (i = 11).
    auto bad = good;
    const float marker = 2.5f;
    char mb[4];
    std::memcpy(mb, &marker, 4);
    auto at = std::search(bad.begin(), bad.end(), mb, mb + 4);
    REQUIRE(at != bad.end());
    at[1] ^= 1;
    spit(dir / "flip.pth", bad);
    CHECK(contains(torch_error(dir / "flip.pth"), "flip.pth: zip entry \"views/data/0\" fails its CRC-32 check"));
    // Cut anywhere: never a crash, always an Error naming the file.
    for (std::size_t cut : {std::size_t(0), std::size_t(10), std::size_t(100), good.size() / 2, good.size() - 23,
                            good.size() - 1}) {
        spit(dir / "cut.pth", std::vector<char>(good.begin(), good.begin() + std::ptrdiff_t(cut)));
        CAPTURE(cut);
        CHECK(contains(torch_error(dir / "cut.pth"), "cut.pth: "));
    }
    spit(dir / "text.pth", {'n', 'o', 't', ' ', 'a', ' ', 'z', 'i', 'p'});
    CHECK(contains(torch_error(dir / "text.pth"), "text.pth: 9 bytes, too short for a zip archive"));
}

TEST_CASE("torch.save: the pickle VM refuses what it does not know, at the byte it is found") {
    auto run = [](std::string_view pk) {
        try {
            (void)detail::run_torch_pickle(reinterpret_cast<const std::byte*>(pk.data()), pk.size(), "t.pkl");
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("(no error)");
    };
    CHECK(contains(run(std::string_view("\x80\x02}q\x00.", 6)), "(no error)"));
    CHECK(contains(run("\x80\x02}("), "t.pkl: pickle byte 4: truncated"));
    CHECK(contains(run("\x80\x02}h\x07."), "t.pkl: pickle byte 5: memo 7 was never stored"));
    CHECK(contains(run("\x80\x02I42\n."), "t.pkl: pickle byte 2: opcode 0x49 is not one torch.save uses"));
    CHECK(contains(run("\x80\x02" "cbuiltins\neval\n."), "the global builtins.eval at byte 2"));
    CHECK(contains(run("\x80\x02K\x01K\x02."), "STOP with 1 objects left on the stack"));
    CHECK(contains(run("\x80\x02(."), "unexpected MARK"));
    CHECK(contains(run("\x80\x02K\x01K\x02K\x03s."), "SETITEM(S) on a int, expected a dict"));
    // A REDUCE of an allowed global with the wrong arguments is refused too (no call is ever made).
    CHECK(contains(run("\x80\x02" "ccollections\nOrderedDict\nK\x01\x85R."), "OrderedDict called with 1 arguments"));
}
