// tests/support/temp_dir.hpp
// A fresh directory for a test's files, removed with everything in it at scope exit; and a one-line
// file writer.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <system_error>

namespace mt_test {

struct TempDir {
    std::filesystem::path path;

    /// temp_directory_path()/minitrain-<pid>-<random>-<n>: unique across processes and within one.
    TempDir() {
        static std::atomic<int> counter{0};
        std::random_device rd;
        path = std::filesystem::temp_directory_path() /
               ("minitrain-" + std::to_string(::getpid()) + "-" + std::to_string(rd()) + "-" +
                std::to_string(counter++));
        std::filesystem::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

/// Writes s to p, bytes as given.
inline void write_text(const std::filesystem::path& p, const std::string& s) {
    std::ofstream f(p, std::ios::binary);
    f << s;
}

}  // namespace mt_test
