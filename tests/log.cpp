// log/ (TensorBoard events, the loss picture, the run report): the event file is checked record by record
// (length, both masked CRC32Cs) and decoded by an independent tool, `protoc --decode_raw` (Debian package
// protobuf-compiler); the picture and the report are checked for what they must show.
#include <doctest/doctest.h>

#include <minitrain/log/plot.hpp>
#include <minitrain/log/run_log.hpp>
#include <minitrain/log/tensorboard.hpp>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"

using namespace minitrain;
namespace fs = std::filesystem;

namespace {

std::string read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The data of every TFRecord in `bytes`, each record's two CRCs checked.
std::vector<std::string> records(const std::string& bytes) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at < bytes.size()) {
        REQUIRE(at + 12 <= bytes.size());
        std::uint64_t n;
        std::uint32_t len_crc, data_crc;
        std::memcpy(&n, bytes.data() + at, 8);
        std::memcpy(&len_crc, bytes.data() + at + 8, 4);
        CHECK(len_crc == tb::mask_crc(tb::crc32c(bytes.data() + at, 8)));
        REQUIRE(at + 12 + n + 4 <= bytes.size());
        std::string data = bytes.substr(at + 12, n);
        std::memcpy(&data_crc, bytes.data() + at + 12 + n, 4);
        CHECK(data_crc == tb::mask_crc(tb::crc32c(data.data(), data.size())));
        out.push_back(std::move(data));
        at += 12 + n + 4;
    }
    return out;
}

/// `protoc --decode_raw` of one message; empty when protoc is not installed.
std::string decode_raw(const mt_test::TempDir& dir, const std::string& message) {
    if (std::system("command -v protoc > /dev/null 2>&1") != 0) return {};
    const fs::path in = dir / "message.bin", out = dir / "decoded.txt";
    mt_test::write_text(in, message);
    const std::string cmd = "protoc --decode_raw < '" + in.string() + "' > '" + out.string() + "' 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);
    return read_all(out);
}

}  // namespace

TEST_CASE("crc32c and the TFRecord mask") {
    CHECK(tb::crc32c("123456789", 9) == 0xE3069283u);  // the CRC-32C check value
    CHECK(tb::crc32c("", 0) == 0u);
    // Continuing a CRC over two pieces equals the CRC of the whole.
    CHECK(tb::crc32c("56789", 5, tb::crc32c("1234", 4)) == 0xE3069283u);
    CHECK(tb::mask_crc(0) == 0xa282ead8u);
    CHECK(tb::mask_crc(0x00008000u) == 0xa282ead9u);  // bit 15 rotates to bit 0
}

TEST_CASE("protobuf encoding of the field kinds") {
    tb::Proto p;
    p.varint(1, 300).int64(2, -1).f64(3, 1.5).f32(4, 2.5f).bytes(5, "hi");
    // 300 = 0b10_0101100 -> ac 02; -1 as int64 is ten bytes; 1.5 and 2.5f as little-endian IEEE bits.
    const std::string want = std::string("\x08\xac\x02", 3) + "\x10" + std::string(9, '\xff') + "\x01" + "\x19" +
                             std::string("\x00\x00\x00\x00\x00\x00\xf8\x3f", 8) + "\x25" +
                             std::string("\x00\x00\x20\x40", 4) + "\x2a\x02hi";
    CHECK(p.str() == want);
}

TEST_CASE("an event file: records with valid CRCs that protoc decodes as Events") {
    mt_test::TempDir dir;
    fs::path file;
    {
        EventWriter w(dir.path);
        file = w.path();
        w.scalar("train/loss", 2.5, 10);
        w.text("samples", "The cat *sat*.", 20);
    }
    CHECK(file.filename().string().starts_with("events.out.tfevents."));
    const auto recs = records(read_all(file));
    REQUIRE(recs.size() == 3);

    const std::string version = decode_raw(dir, recs[0]), scalar = decode_raw(dir, recs[1]), text = decode_raw(dir, recs[2]);
    if (version.empty()) {
        WARN_MESSAGE(false, "protoc not found (Debian package protobuf-compiler): the event file was checked by CRC only");
        return;
    }
    // Event.wall_time (1, a double) and Event.file_version (3).
    CHECK(version.find("1: 0x") != std::string::npos);
    CHECK(version.find("3: \"brain.Event:2\"") != std::string::npos);
    // Event.step = 10, Event.summary (5) { Value (1) { tag (1), simple_value (2) = 2.5f = 0x40200000 } }.
    CHECK(scalar.find("2: 10\n") != std::string::npos);
    CHECK(scalar.find("5 {") != std::string::npos);
    CHECK(scalar.find("1: \"train/loss\"") != std::string::npos);
    CHECK(scalar.find("2: 0x40200000") != std::string::npos);
    // Value { tensor (8) { dtype (1) = 7 (DT_STRING), string_val (8) }, metadata (9) { plugin_data (1) { plugin_name "text" } } }.
    INFO(text);
    CHECK(text.find("2: 20\n") != std::string::npos);
    CHECK(text.find("1: \"samples\"") != std::string::npos);
    CHECK(text.find("8 {") != std::string::npos);
    CHECK(text.find("1: 7") != std::string::npos);
    CHECK(text.find("8: \"The cat *sat*.\"") != std::string::npos);
    CHECK(text.find("9 {") != std::string::npos);
    CHECK(text.find("1: \"text\"") != std::string::npos);
}

TEST_CASE("read_metrics keeps the newest value of a repeated step; loss_svg draws every series") {
    mt_test::TempDir dir;
    std::string m;
    for (int s = 1; s <= 40; ++s) m += "{\"step\":" + std::to_string(s) + ",\"loss\":" + std::to_string(5.0 - s * 0.05) + ",\"lr\":0.001}\n";
    m += "{\"step\":20,\"val_loss\":4.2,\"val_ppl\":66.7}\n{\"step\":40,\"val_loss\":3.5}\n";
    m += "{\"step\":30,\"loss\":9.0}\n";  // a resumed run that repeats from step 30: the later lines win
    m += "not json\n{\"step\":40,\"sample\":\"a <b>\"}\n";
    mt_test::write_text(dir / "metrics.jsonl", m);
    mt_test::write_text(dir / "run.json", "{\"tokens_per_step\": 2048}");
    RunCurves r = read_metrics(dir / "metrics.jsonl", "demo");
    CHECK(r.loss.size() == 30);  // steps 1..29 and the new 30
    CHECK(r.loss.back().second == 9.0);
    CHECK(r.val_loss.size() == 2);
    CHECK(r.lr.size() == 40);  // step 30 of the resumed run logged no lr: the first run's stays
    CHECK(r.tokens_per_step == 2048);
    const std::string svg = loss_svg({r, r}, "two <runs>");
    CHECK(svg.starts_with("<svg "));
    CHECK(svg.find("two &lt;runs&gt;") != std::string::npos);
    CHECK(svg.find("(val 3.500)") != std::string::npos);
    CHECK(svg.find("<circle") != std::string::npos);
    CHECK(svg.find("stroke-dasharray=\"5 4\"") != std::string::npos);  // the lr line
}

TEST_CASE("RunLog: event scalars per metrics line, loss.svg and report.md") {
    mt_test::TempDir dir;
    nlohmann::json config = {{"task", "pretrain"}, {"model", {{"layers", 2}, {"hidden", 32}, {"heads", 4}, {"kv_heads", 2}, {"ffn", 96}, {"moe", false}}},
                             {"batch_size", 4}, {"max_seq_len", 16}, {"accumulation_steps", 1}};
    RunLog::Sizes sizes{.parameters = 30000, .trained = 30000, .total_steps = 2, .tokens_per_step = 64, .preset = "test"};
    {
        RunLog log(dir.path, config, sizes);
        std::ofstream metrics(dir / "metrics.jsonl");
        for (const char* line : {R"({"step":1,"loss":4.0,"lr":0.001,"grad_norm":1.0,"tokens_per_s":1000,"epoch":0})",
                                 R"({"step":2,"loss":3.0,"lr":0.0005,"grad_norm":0.5,"tokens_per_s":1200,"epoch":0})",
                                 R"({"step":2,"val_loss":3.2,"val_ppl":24.5,"val_bpb":1.1,"val_tokens":64})",
                                 R"({"step":2,"sample":"hello world"})"}) {
            metrics << line << "\n";
            log.record(nlohmann::json::parse(line));
        }
        metrics.close();
        log.finish(dir / "final", dir / "checkpoints/step_00000002");
        const auto recs = records(read_all(log.event_file()));
        CHECK(recs.size() == 1 + 1 + 5 + 5 + 4 + 1);  // version, config, 2 x 5 train scalars, 4 val scalars, a sample
    }
    CHECK(fs::exists(dir / "loss.svg"));
    CHECK(fs::exists(dir / "run.json"));
    const std::string report = read_all(dir / "report.md");
    INFO(report);
    CHECK(report.find("# pretrain run") != std::string::npos);
    CHECK(report.find("preset test: 2 layers x 32") != std::string::npos);
    CHECK(report.find("| tokens seen | 0.000128M") != std::string::npos);
    CHECK(report.find("| MFU |") != std::string::npos);
    CHECK(report.find("| final val loss | 3.2000 (ppl 24.50, bpb 1.1000") != std::string::npos);
    CHECK(report.find("![loss curve](loss.svg)") != std::string::npos);
    CHECK(report.find("hello world") != std::string::npos);
    CHECK(report.find("checkpoints/step_00000002") != std::string::npos);
}
