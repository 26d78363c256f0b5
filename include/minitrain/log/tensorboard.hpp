// minitrain/log/tensorboard.hpp
// TensorBoard event files, written without TensorFlow: scalars, text, and the run's configuration as text.
//
// The file (DIR/events.out.tfevents.<seconds>.<host>.<pid>, which TensorBoard finds in any run folder) is a
// TFRecord file: a sequence of records
//     uint64 length | uint32 masked_crc32c(length) | byte data[length] | uint32 masked_crc32c(data)
// (little endian; CRC32C is the Castagnoli CRC, masked as ((crc >> 15) | (crc << 17)) + 0xa282ead8),
// each record one serialized tensorflow.Event protobuf. The fields written (event.proto, summary.proto,
// tensor.proto):
//     Event        { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//     Summary      { repeated Value value = 1; }
//     Value        { string tag = 1; float simple_value = 2; TensorProto tensor = 8; SummaryMetadata metadata = 9; }
//     SummaryMetadata { PluginData plugin_data = 1; }   PluginData { string plugin_name = 1; }
//     TensorProto  { DataType dtype = 1 (DT_STRING = 7); TensorShapeProto tensor_shape = 2; repeated bytes string_val = 8; }
// The first record is the file_version event "brain.Event:2". A scalar is a simple_value (TensorBoard's
// scalar dashboard reads it); a text is a rank-0 DT_STRING tensor tagged for the "text" plugin, which
// renders it as Markdown. tests/tensorboard.cpp decodes the files with `protoc --decode_raw`.
//
// Each record is one write(2) on an O_APPEND descriptor (nothing buffered: a crash loses nothing written);
// a failed write is an Error naming the file.
#pragma once

#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <unistd.h>

#include "../core/error.hpp"

namespace minitrain {

namespace tb {

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) of `n` bytes, continuing from `crc`.
/// crc32c("123456789") == 0xE3069283.
inline std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) {
    static const std::array<std::uint32_t, 256> table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    const auto* p = static_cast<const unsigned char*>(data);
    crc = ~crc;
    for (std::size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/// The TFRecord mask of a CRC (so that a CRC of data that holds CRCs is not degenerate).
inline std::uint32_t mask_crc(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/// A protobuf message being serialized: fields appended in any order (the decoder does not care).
class Proto {
public:
    enum Wire : std::uint32_t { varint_wire = 0, fixed64_wire = 1, bytes_wire = 2, fixed32_wire = 5 };

    Proto& varint(int field, std::uint64_t v) {
        key(field, varint_wire);
        put_varint(v);
        return *this;
    }
    Proto& int64(int field, std::int64_t v) { return varint(field, std::uint64_t(v)); }  // two's complement, as int64
    Proto& f64(int field, double v) {
        key(field, fixed64_wire);
        put_fixed(&v, 8);
        return *this;
    }
    Proto& f32(int field, float v) {
        key(field, fixed32_wire);
        put_fixed(&v, 4);
        return *this;
    }
    Proto& bytes(int field, std::string_view b) {
        key(field, bytes_wire);
        put_varint(b.size());
        buf_.append(b.data(), b.size());
        return *this;
    }
    Proto& message(int field, const Proto& m) { return bytes(field, m.buf_); }
    const std::string& str() const { return buf_; }

private:
    void key(int field, Wire w) { put_varint((std::uint64_t(field) << 3) | w); }
    void put_varint(std::uint64_t v) {
        while (v >= 0x80) {
            buf_ += char((v & 0x7f) | 0x80);
            v >>= 7;
        }
        buf_ += char(v);
    }
    void put_fixed(const void* p, int n) {  // little endian: the hosts minitrain runs on are
        static_assert(std::endian::native == std::endian::little, "tb::Proto writes fixed-width fields as they lie in memory");
        buf_.append(static_cast<const char*>(p), std::size_t(n));
    }
    std::string buf_;
};

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
inline std::string record(std::string_view data) {
    std::string r;
    const std::uint64_t n = data.size();
    const std::uint32_t len_crc = mask_crc(crc32c(&n, 8)), data_crc = mask_crc(crc32c(data.data(), data.size()));
    r.append(reinterpret_cast<const char*>(&n), 8);
    r.append(reinterpret_cast<const char*>(&len_crc), 4);
    r.append(data.data(), data.size());
    r.append(reinterpret_cast<const char*>(&data_crc), 4);
    return r;
}

inline double wall_time() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace tb

/// Appends TensorBoard events to a new event file in `dir`.
class EventWriter {
public:
    explicit EventWriter(const std::filesystem::path& dir) {
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        char host[256] = "localhost";
        ::gethostname(host, sizeof host - 1);
        // TensorBoard's own name pattern; the pid keeps two writers started in the same second apart.
        path_ = dir / ("events.out.tfevents." + std::to_string(long(tb::wall_time())) + "." + host + "." +
                       std::to_string(::getpid()));
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
        if (fd_ < 0) {
            const int err = errno;
            detail::fail(path_.string(), ": cannot create the TensorBoard event file: ", std::strerror(err));
        }
        tb::Proto e;
        e.f64(1, tb::wall_time()).bytes(3, "brain.Event:2");
        append(e);
    }
    EventWriter(const EventWriter&) = delete;
    EventWriter& operator=(const EventWriter&) = delete;
    ~EventWriter() {
        if (fd_ >= 0) ::close(fd_);
    }

    /// A point of the scalar series `tag` (e.g. "train/loss") at `step`.
    void scalar(std::string_view tag, double value, std::int64_t step) {
        tb::Proto v;
        v.bytes(1, tag).f32(2, float(value));
        summary(v, step);
    }

    /// A text (Markdown) under `tag` at `step`: the Text dashboard.
    void text(std::string_view tag, std::string_view text, std::int64_t step) {
        tb::Proto plugin, meta, shape, tensor, v;
        plugin.bytes(1, "text");
        meta.message(1, plugin);
        tensor.varint(1, 7 /* DT_STRING */).message(2, shape).bytes(8, text);
        v.bytes(1, tag).message(8, tensor).message(9, meta);
        summary(v, step);
    }

    const std::filesystem::path& path() const { return path_; }

private:
    void summary(const tb::Proto& value, std::int64_t step) {
        tb::Proto s, e;
        s.message(1, value);
        e.f64(1, tb::wall_time()).int64(2, step).message(5, s);
        append(e);
    }
    void append(const tb::Proto& event) {
        const std::string r = tb::record(event.str());
        const char* p = r.data();
        std::size_t left = r.size();
        while (left > 0) {
            const ssize_t w = ::write(fd_, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                const int err = w < 0 ? errno : ENOSPC;
                detail::fail(path_.string(), ": cannot append to the TensorBoard event file: ", std::strerror(err));
            }
            p += w;
            left -= std::size_t(w);
        }
    }

    std::filesystem::path path_;
    int fd_ = -1;
};

}  // namespace minitrain
