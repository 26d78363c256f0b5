// minitrain/core/dtype.hpp
// Element types and devices. bf16 is a storage type: arithmetic happens in f32.
// f64 exists so that the CPU kernels can be checked against finite differences in double precision.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "error.hpp"

#if defined(__CUDACC__)
#define MT_HOST_DEVICE __host__ __device__
#else
#define MT_HOST_DEVICE
#endif

namespace minitrain {

enum class DType : std::uint8_t { f32, f64, bf16, i32 };
enum class Device : std::uint8_t { cpu, cuda };

/// Brain float: the top 16 bits of an IEEE f32; conversion rounds to nearest even.
struct bf16 {
    std::uint16_t bits = 0;

    bf16() = default;
    MT_HOST_DEVICE explicit bf16(float f) : bits(round(f)) {}
    MT_HOST_DEVICE explicit operator float() const {
        std::uint32_t u = std::uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &u, sizeof f);
        return f;
    }

private:
    MT_HOST_DEVICE static std::uint16_t round(float f) {
        std::uint32_t u;
        std::memcpy(&u, &f, sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return std::uint16_t((u >> 16) | 0x40);  // quiet NaN
        u += 0x7fffu + ((u >> 16) & 1u);
        return std::uint16_t(u >> 16);
    }
};

constexpr std::size_t dtype_size(DType t) {
    switch (t) {
        case DType::f32: return 4;
        case DType::f64: return 8;
        case DType::bf16: return 2;
        case DType::i32: return 4;
    }
    return 0;
}

constexpr std::string_view dtype_name(DType t) {
    switch (t) {
        case DType::f32: return "f32";
        case DType::f64: return "f64";
        case DType::bf16: return "bf16";
        case DType::i32: return "i32";
    }
    return "?";
}

constexpr std::string_view device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<std::int32_t>() { return DType::i32; }

/// Calls f.template operator()<T>() with T = float or double according to t; other types are an error.
template <class F>
decltype(auto) dispatch_floating(DType t, std::string_view op, F&& f) {
    switch (t) {
        case DType::f32: return f.template operator()<float>();
        case DType::f64: return f.template operator()<double>();
        default: break;
    }
    detail::fail(op, ": expected an f32 or f64 tensor, found ", dtype_name(t));
}

}  // namespace minitrain
