// tests/fuzz/fuzz.hpp
// What the libFuzzer targets (tests/fuzz/<target>.cpp) share: the input bytes written to a file in a
// per-process scratch folder (the loaders take paths; /dev/shm when there is one, so no disk I/O), and
// the rule of every target: minitrain::Error is an expected outcome, anything else is a finding. An
// escaping exception of another type is printed and aborts (libFuzzer then saves the input); crashes,
// sanitizer reports, leaks, timeouts and oversized allocations are reported by libFuzzer itself.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <typeinfo>

#include <minitrain/core/error.hpp>

namespace mt_fuzz {

/// A folder of this process's own, removed at exit.
inline const std::filesystem::path& scratch() {
    static const std::filesystem::path dir = [] {
        std::error_code ec;
        std::filesystem::path base =
            std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
        auto d = base / ("minitrain-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        std::atexit([] {
            std::error_code e;
            std::filesystem::remove_all(scratch(), e);
        });
        return d;
    }();
    return dir;
}

/// Writes bytes to scratch()/name (replacing it) and returns the path.
inline std::filesystem::path write_file(const std::string& name, const void* data, std::size_t size) {
    auto p = scratch() / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(static_cast<const char*>(data), std::streamsize(size));
    if (!f) {
        std::fprintf(stderr, "fuzz: cannot write %s\n", p.c_str());
        std::abort();
    }
    return p;
}

/// Runs f; minitrain::Error is fine, any other exception is a finding.
template <class F>
void run(F&& f) {
    try {
        f();
    } catch (const minitrain::Error&) {
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fuzz finding: exception %s escaped (not minitrain::Error): %s\n", typeid(e).name(), e.what());
        std::abort();
    } catch (...) {
        std::fprintf(stderr, "fuzz finding: an exception that is not a std::exception escaped\n");
        std::abort();
    }
}

/// A broken invariant (not an input error): print it and abort.
#define MT_FUZZ_ASSERT(cond, what)                                                                     \
    do {                                                                                               \
        if (!(cond)) {                                                                                 \
            std::fprintf(stderr, "fuzz finding: %s (%s, %s:%d)\n", what, #cond, __FILE__, __LINE__);   \
            std::abort();                                                                              \
        }                                                                                              \
    } while (0)

}  // namespace mt_fuzz
