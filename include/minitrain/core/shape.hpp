// minitrain/core/shape.hpp
// A shape of up to four dimensions, stored inline (no heap).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <string>

#include "error.hpp"

namespace minitrain {

struct Shape {
    static constexpr int max_rank = 4;
    std::array<std::int64_t, max_rank> dims{};
    int rank = 0;

    Shape() = default;
    Shape(std::initializer_list<std::int64_t> d) {
        MT_CHECK(int(d.size()) <= max_rank, "Shape: at most ", max_rank, " dimensions, got ", d.size());
        for (auto v : d) {
            MT_CHECK(v >= 0, "Shape: dimension ", rank, " is negative (", v, ")");
            dims[rank++] = v;
        }
    }

    std::int64_t operator[](int i) const { return dims[i < 0 ? rank + i : i]; }
    std::int64_t numel() const {
        std::int64_t n = 1;
        for (int i = 0; i < rank; ++i) n *= dims[i];
        return n;
    }
    /// Product of all dimensions but the last: the row count when the tensor is seen as a matrix.
    std::int64_t rows() const { return rank == 0 ? 1 : numel() / dims[rank - 1]; }
    std::int64_t cols() const { return rank == 0 ? 1 : dims[rank - 1]; }

    friend bool operator==(const Shape& a, const Shape& b) {
        if (a.rank != b.rank) return false;
        for (int i = 0; i < a.rank; ++i)
            if (a.dims[i] != b.dims[i]) return false;
        return true;
    }

    std::string str() const {
        std::ostringstream os;
        os << *this;
        return os.str();
    }
    friend std::ostream& operator<<(std::ostream& os, const Shape& s) {
        os << '(';
        for (int i = 0; i < s.rank; ++i) os << (i ? ", " : "") << s.dims[i];
        return os << ')';
    }
};

}  // namespace minitrain
