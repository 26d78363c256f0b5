// minitrain/core/error.hpp
// One exception type and one check macro. Every message says what was expected and what was found,
// and where (file, field, tensor) when the caller knows it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace minitrain {

/// The only exception minitrain throws on bad input or misuse.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Parts>
[[noreturn]] inline void fail(Parts&&... parts) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    throw Error(os.str());
}
}  // namespace detail

}  // namespace minitrain

/// MT_CHECK(cond, parts...) throws minitrain::Error with the concatenated parts when cond is false.
#define MT_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) ::minitrain::detail::fail(__VA_ARGS__);                                       \
    } while (0)
