// Token shards (llm.c format) and the pretraining loader: file round trips in both token widths, the batch
// layout token by token, shard boundaries and epoch wrap, globbing, shuffling, multi-rank slicing,
// resuming from a saved position, and the errors for bad files.
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
#include "minitrain/data/shards.hpp"
#include "minitrain/data/token_loader.hpp"
#include "minitrain/memory/arena.hpp"
#include "support/temp_dir.hpp"

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

using mt_test::TempDir;

/// Tokens base, base+1, ..., base+n-1: every token tells where it came from.
std::vector<std::uint32_t> ramp(std::uint32_t base, std::size_t n) {
    std::vector<std::uint32_t> t(n);
    for (std::size_t i = 0; i < n; ++i) t[i] = base + std::uint32_t(i);
    return t;
}

/// One batch, inputs then targets, flattened.
struct Batch {
    std::vector<std::int32_t> in, tgt;
    auto operator<=>(const Batch&) const = default;
};

Batch take(TokenLoader& L) {
    Buffer<CPU> in(Shape{L.batch_size(), L.seq_len()}, DType::i32), tgt(Shape{L.batch_size(), L.seq_len()}, DType::i32);
    L.next(in, tgt);
    std::size_t n = std::size_t(L.batch_size()) * std::size_t(L.seq_len());
    return {{in.data<std::int32_t>(), in.data<std::int32_t>() + n}, {tgt.data<std::int32_t>(), tgt.data<std::int32_t>() + n}};
}

std::vector<Batch> take(TokenLoader& L, int n) {
    std::vector<Batch> out;
    for (int i = 0; i < n; ++i) out.push_back(take(L));
    return out;
}

/// Checks that `b` is the window of B*T+1 tokens of a ramp starting at token value `first`.
void check_window(const Batch& b, std::int32_t first) {
    for (std::size_t i = 0; i < b.in.size(); ++i) {
        REQUIRE(b.in[i] == first + std::int32_t(i));
        REQUIRE(b.tgt[i] == first + std::int32_t(i) + 1);
    }
}

std::string error_of(auto&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    FAIL("no Error thrown");
    return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("shards: uint16 round trip, header as llm.c writes it") {
    TempDir dir;
    auto f = dir / "train_000.bin";
    std::vector<std::uint32_t> toks(1001);
    Rng rng{1};
    for (auto& t : toks) t = std::uint32_t(rng.below(50257));
    toks[5] = 50256;
    write_token_shard(f, toks, 50257);
    CHECK(fs::file_size(f) == 1024 + 2 * toks.size());
    std::int32_t header[256];
    std::ifstream(f, std::ios::binary).read(reinterpret_cast<char*>(header), sizeof header);
    CHECK(header[0] == 20240520);
    CHECK(header[1] == 1);
    CHECK(header[2] == 1001);
    CHECK(std::all_of(header + 3, header + 256, [](std::int32_t v) { return v == 0; }));

    TokenShard s(f);
    CHECK(s.size() == 1001);
    CHECK(s.token_bytes() == 2);
    for (std::size_t i = 0; i < toks.size(); ++i) REQUIRE(s.token(std::int64_t(i)) == toks[i]);
    CHECK_NOTHROW(s.validate(50257));
    CHECK_THROWS_AS(s.token(1001), Error);
}

TEST_CASE("shards: uint32 round trip for a vocabulary above 65536") {
    TempDir dir;
    auto f = dir / "llama.bin";
    std::vector<std::uint32_t> toks = {0, 65535, 65536, 128255, 7, 100000};
    write_token_shard(f, toks, 128256);
    CHECK(fs::file_size(f) == 1024 + 4 * toks.size());
    std::int32_t header[3];
    std::ifstream(f, std::ios::binary).read(reinterpret_cast<char*>(header), sizeof header);
    CHECK(header[0] == 20240801);
    CHECK(header[1] == 7);
    CHECK(header[2] == 6);
    TokenShard s(f);
    CHECK(s.token_bytes() == 4);
    for (std::size_t i = 0; i < toks.size(); ++i) CHECK(s.token(std::int64_t(i)) == toks[i]);
    CHECK_THROWS_WITH_AS(s.validate(100000), doctest::Contains("llama.bin: token at offset 3 is 128255"), Error);
    // The writer refuses tokens outside the vocabulary it is told.
    CHECK_THROWS_WITH_AS(write_token_shard(dir / "w.bin", toks, 70000), doctest::Contains("offset 3 is 128255"), Error);
    CHECK_FALSE(fs::exists(dir / "w.bin"));
}

TEST_CASE("loader: llm.c batch layout, token by token, and the epoch wrap") {
    TempDir dir;
    const int B = 3, T = 5;  // B*T = 15
    for (auto nb : {std::pair{61, 4}, {60, 3}, {16, 1}, {75, 4}}) {
        const int ntok = nb.first, batches = nb.second;
        CAPTURE(ntok);
        std::string name = "s";  // built by appends: GCC 12 warns falsely (-Wrestrict) on "s" + std::string
        name += std::to_string(ntok) + ".bin";
        auto f = dir / name;
        write_token_shard(f, ramp(0, std::size_t(ntok)), 65536);
        TokenDataset data(f.string(), 65536);
        TokenLoader L(data, B, T, false, 0);
        CHECK(L.batches_per_epoch() == batches);
        for (int epoch = 0; epoch < 2; ++epoch)
            for (int i = 0; i < batches; ++i) {
                CHECK(L.epoch() == epoch);
                Batch b = take(L);
                // Batch i starts at token i*B*T; row r is the window starting at i*B*T + r*T; targets shift by one.
                for (int r = 0; r < B; ++r)
                    for (int t = 0; t < T; ++t) {
                        REQUIRE(b.in[std::size_t(r * T + t)] == i * B * T + r * T + t);
                        REQUIRE(b.tgt[std::size_t(r * T + t)] == i * B * T + r * T + t + 1);
                    }
            }
        CHECK(L.epoch() == 2);
    }
}

TEST_CASE("loader: shard boundaries, then wrap to shard 0") {
    TempDir dir;
    const int B = 2, T = 4;  // B*T = 8
    write_token_shard(dir / "d_0.bin", ramp(10000, 25), 65536);  // (25-1)/8 = 3 batches
    write_token_shard(dir / "d_1.bin", ramp(20000, 9), 65536);   // exactly 1 batch
    write_token_shard(dir / "d_2.bin", ramp(30000, 24), 65536);  // (24-1)/8 = 2 batches: the +1 matters
    TokenDataset data((dir / "d_*.bin").string(), 65536);
    TokenLoader L(data, B, T, false, 0);
    CHECK(L.batches_per_epoch() == 6);
    std::vector<std::int32_t> starts = {10000, 10008, 10016, 20000, 30000, 30008};
    for (int epoch = 0; epoch < 3; ++epoch)
        for (std::size_t i = 0; i < starts.size(); ++i) {
            auto p = L.position();
            CHECK(p.epoch == epoch);
            CHECK(p.shard == (i < 3 ? 0 : i < 4 ? 1 : 2));
            check_window(take(L), starts[i]);
        }
}

TEST_CASE("dataset: a glob opens the matching shards in sorted order; no match names the pattern") {
    TempDir dir;
    for (int s : {2, 0, 1}) write_token_shard(dir / ("train_00" + std::to_string(s) + ".bin"), ramp(std::uint32_t(1000 * s), 17 + s), 5000);
    write_token_shard(dir / "val_000.bin", ramp(0, 50), 5000);
    TokenDataset data((dir / "train_*.bin").string(), 5000);
    REQUIRE(data.size() == 3);
    for (std::size_t s = 0; s < 3; ++s) {
        CHECK(data.shard(s).path().filename() == "train_00" + std::to_string(s) + ".bin");
        CHECK(data.shard(s).size() == std::int64_t(17 + s));
        CHECK(data.shard(s).token(0) == 1000 * s);
    }
    CHECK(data.total_tokens() == 17 + 18 + 19);
    std::string pattern = (dir / "test_*.bin").string();
    CHECK(contains(error_of([&] { TokenDataset d(pattern, 5000); }), pattern));
    std::string missing = (dir / "nothing.bin").string();
    CHECK(contains(error_of([&] { TokenDataset d(missing, 5000); }), missing));
}

TEST_CASE("loader: shuffling is deterministic per seed and covers exactly the unshuffled batches") {
    TempDir dir;
    const int B = 2, T = 3;  // B*T = 6
    write_token_shard(dir / "s_0.bin", ramp(0, 6 * 9 + 1), 65536);      // 9 batches
    write_token_shard(dir / "s_1.bin", ramp(10000, 6 * 5 + 4), 65536);  // 5 batches
    write_token_shard(dir / "s_2.bin", ramp(20000, 6 * 7 + 1), 65536);  // 7 batches
    TokenDataset data((dir / "s_*.bin").string(), 65536);
    TokenLoader plain(data, B, T, false, 0), a(data, B, T, true, 1), a2(data, B, T, true, 1), b(data, B, T, true, 2);
    const int E = int(plain.batches_per_epoch());
    REQUIRE(E == 21);
    auto ref = take(plain, E);
    auto sa = take(a, 2 * E), sa2 = take(a2, 2 * E), sb = take(b, E);
    CHECK(sa == sa2);
    std::vector<Batch> a0(sa.begin(), sa.begin() + E), a1(sa.begin() + E, sa.end());
    CHECK(a0 != ref);
    CHECK(a0 != sb);
    CHECK(a0 != a1);  // a new epoch, a new order
    std::sort(ref.begin(), ref.end());
    for (auto* epoch : {&a0, &a1, &sb}) {
        std::sort(epoch->begin(), epoch->end());
        CHECK(*epoch == ref);
    }
}

TEST_CASE("loader: ranks read disjoint consecutive slices of the same global batch, shuffled or not") {
    TempDir dir;
    const int B = 2, T = 3, W = 2;  // rank slice 6 tokens, global batch 12
    write_token_shard(dir / "r_0.bin", ramp(0, 12 * 4 + 1), 65536);
    write_token_shard(dir / "r_1.bin", ramp(10000, 12 * 3 + 5), 65536);
    TokenDataset data((dir / "r_*.bin").string(), 65536);
    for (bool shuffle : {false, true}) {
        CAPTURE(shuffle);
        TokenLoader r0(data, B, T, shuffle, 5, 0, W), r1(data, B, T, shuffle, 5, 1, W);
        CHECK(r0.batches_per_epoch() == 7);
        for (int i = 0; i < 14; ++i) {
            auto at0 = r0.peek(), at1 = r1.peek();
            CHECK(at0.shard == at1.shard);
            CHECK(at0.token % (B * T * W) == 0);
            CHECK(at1.token == at0.token + B * T);
            if (!shuffle) CHECK(at0.token == (i % 7 < 4 ? i % 7 : i % 7 - 4) * B * T * W);
            Batch b0 = take(r0), b1 = take(r1);
            check_window(b1, b0.in.back() + 1);  // rank 1 continues where rank 0 stopped
        }
    }
    CHECK_THROWS_AS(TokenLoader(data, B, T, false, 0, 2, 2), Error);
}

TEST_CASE("loader: resuming from a saved position continues exactly like an uninterrupted run") {
    TempDir dir;
    const int B = 2, T = 2;
    write_token_shard(dir / "p_0.bin", ramp(0, 4 * 6 + 1), 65536);
    write_token_shard(dir / "p_1.bin", ramp(10000, 4 * 3 + 2), 65536);
    write_token_shard(dir / "p_2.bin", ramp(20000, 4 * 4 + 1), 65536);
    TokenDataset data((dir / "p_*.bin").string(), 65536);
    for (bool shuffle : {false, true}) {
        CAPTURE(shuffle);
        TokenLoader uninterrupted(data, B, T, shuffle, 42);
        const int E = int(uninterrupted.batches_per_epoch());
        const int follow = 6;
        auto ref = take(uninterrupted, 2 * E + follow + 1);
        for (int k = 0; k <= 2 * E + 1; ++k) {
            CAPTURE(k);
            TokenLoader first(data, B, T, shuffle, 42);
            take(first, k);
            TokenLoader::Position p = first.position();
            // A new loader (even built with another seed) picks up from the saved position.
            TokenLoader resumed(data, B, T, shuffle, 7);
            resumed.seek(p);
            auto next = take(resumed, follow);
            REQUIRE(std::equal(next.begin(), next.end(), ref.begin() + k));
            CHECK(resumed.epoch() == (k + follow) / E);
        }
        // reset() replays from the start of epoch 0.
        uninterrupted.reset();
        CHECK(take(uninterrupted) == ref[0]);
        // A position at the end of a shard is the start of the next one.
        TokenLoader L(data, B, T, shuffle, 42);
        auto p = L.position();
        p.batch_in_shard = L.batches_in_shard(shuffle ? L.peek().shard : 0);
        L.seek(p);
        CHECK(L.position().shard == 1);
        CHECK(L.position().batch_in_shard == 0);
        p.batch_in_shard += 1;
        CHECK_THROWS_AS(L.seek(p), Error);
        p.shard = 3;
        CHECK_THROWS_AS(L.seek(p), Error);
    }
}

TEST_CASE("dataset: a token outside the vocabulary is an error naming the file and the offset") {
    TempDir dir;
    auto toks = ramp(0, 100);
    toks[37] = 5000;
    write_token_shard(dir / "v_0.bin", ramp(0, 100), 65536);
    write_token_shard(dir / "v_1.bin", toks, 65536);
    std::string msg = error_of([&] { TokenDataset d((dir / "v_*.bin").string(), 1000); });
    CHECK(contains(msg, (dir / "v_1.bin").string()));
    CHECK(contains(msg, "offset 37"));
    CHECK(contains(msg, "5000"));
    CHECK_NOTHROW(TokenDataset((dir / "v_*.bin").string(), 5001));
}

TEST_CASE("shards: truncated, padded and foreign files are errors naming the file and the sizes") {
    TempDir dir;
    auto f = dir / "t.bin";
    write_token_shard(f, ramp(0, 100), 65536);  // 1024 + 200 bytes
    fs::resize_file(f, 1024 + 150);
    std::string msg = error_of([&] { TokenShard s(f); });
    CHECK(contains(msg, f.string()));
    CHECK(contains(msg, "1224"));
    CHECK(contains(msg, "1174"));
    CHECK(contains(msg, "truncated"));

    fs::resize_file(f, 1024 + 201);
    CHECK(contains(error_of([&] { TokenShard s(f); }), "trailing"));
    fs::resize_file(f, 1000);
    CHECK(contains(error_of([&] { TokenShard s(f); }), "shorter than the 1024-byte shard header"));

    write_token_shard(f, ramp(0, 10), 65536);
    {
        std::fstream io(f, std::ios::binary | std::ios::in | std::ios::out);
        std::int32_t bad = 12345;
        io.write(reinterpret_cast<const char*>(&bad), 4);
    }
    CHECK(contains(error_of([&] { TokenShard s(f); }), "unknown shard magic 12345"));

    write_token_shard(f, ramp(0, 10), 65536);
    {
        std::fstream io(f, std::ios::binary | std::ios::in | std::ios::out);
        io.seekp(4);
        std::int32_t bad = 7;
        io.write(reinterpret_cast<const char*>(&bad), 4);
    }
    CHECK(contains(error_of([&] { TokenShard s(f); }), "expects version 1, found 7"));

    // The header's count is checked against the file's size before anything is read: the largest count
    // (2^31 - 1 uint32 tokens, 8 GiB) in a 1 KB file, and a negative one, fail at open.
    for (std::int32_t count : {std::int32_t(2147483647), std::int32_t(-1)}) {
        CAPTURE(count);
        write_token_shard(f, ramp(0, 10), 70000);  // uint32
        {
            std::fstream io(f, std::ios::binary | std::ios::in | std::ios::out);
            io.seekp(8);
            io.write(reinterpret_cast<const char*>(&count), 4);
        }
        msg = error_of([&] { TokenShard s(f); });
        CHECK(contains(msg, f.string()));
        CHECK(contains(msg, count < 0 ? "header token count is negative (-1)" : "8589935612 bytes, found 1064 (truncated)"));
    }
}

TEST_CASE("loader: a shard too small for one batch, and wrong batch tensors, are errors") {
    TempDir dir;
    write_token_shard(dir / "a_0.bin", ramp(0, 100), 65536);
    write_token_shard(dir / "a_1.bin", ramp(0, 12), 65536);
    TokenDataset data((dir / "a_*.bin").string(), 65536);
    std::string msg = error_of([&] { TokenLoader L(data, 3, 4, false, 0); });  // needs 13 tokens
    CHECK(contains(msg, (dir / "a_1.bin").string()));
    CHECK(contains(msg, "13"));

    TokenDataset one((dir / "a_0.bin").string(), 65536);
    TokenLoader L(one, 3, 4, false, 0);
    Buffer<CPU> in(Shape{3, 4}, DType::i32), tgt(Shape{3, 4}, DType::i32), f32(Shape{3, 4}, DType::f32),
        wrong(Shape{4, 3}, DType::i32);
    CHECK_THROWS_AS(L.next(wrong, tgt), Error);
    CHECK_THROWS_AS(L.next(in, f32), Error);
    CHECK(L.position().batch_in_shard == 0);  // a failed call does not advance
    L.next(in, tgt);
    CHECK(L.position().batch_in_shard == 1);
}
