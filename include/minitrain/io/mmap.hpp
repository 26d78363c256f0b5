// minitrain/io/mmap.hpp
// MappedFile: a read-only memory map of a whole file (POSIX open/fstat/mmap/munmap), owned RAII-style.
// Checkpoints and token shards are read through it so that opening a multi-gigabyte file costs nothing
// until pages are touched, and the page cache is shared with every other process reading the same data.
#pragma once

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.hpp"

namespace minitrain {

namespace detail {
/// The text for an errno value (thread-safe, unlike strerror).
inline std::string errno_text(int err) { return std::generic_category().message(err); }
}  // namespace detail

/// A read-only view of a whole file's bytes. Movable, not copyable; the mapping lives until destruction,
/// so pointers into it stay valid across moves of the MappedFile itself.
class MappedFile {
public:
    MappedFile() = default;

    /// Maps `path`; throws Error naming the path and the system's reason when it cannot.
    explicit MappedFile(const std::filesystem::path& path) : path_(path) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            detail::fail(path.string(), ": cannot open for reading: ", detail::errno_text(err));
        }
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            int err = errno;
            ::close(fd);
            detail::fail(path.string(), ": cannot stat: ", detail::errno_text(err));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            detail::fail(path.string(), ": not a regular file");
        }
        size_ = std::size_t(st.st_size);
        // mmap rejects a zero length; an empty file is simply an empty view.
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                int err = errno;
                ::close(fd);
                detail::fail(path.string(), ": cannot map ", size_, " bytes: ", detail::errno_text(err));
            }
            data_ = static_cast<const std::byte*>(p);
        }
        ::close(fd);  // the mapping keeps its own reference to the file
    }

    MappedFile(MappedFile&& o) noexcept
        : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    MappedFile& operator=(MappedFile&& o) noexcept {
        if (this != &o) {
            unmap();
            path_ = std::move(o.path_);
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile() { unmap(); }

    /// First byte of the file (nullptr for an empty file). Page-aligned.
    const std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }
    std::span<const std::byte> bytes() const { return {data_, size_}; }
    const std::filesystem::path& path() const { return path_; }

    /// Hint that the file will be read front to back (token shards); failure is harmless and ignored.
    void advise_sequential() const {
        if (data_) ::madvise(const_cast<std::byte*>(data_), size_, MADV_SEQUENTIAL);
    }

private:
    void unmap() noexcept {
        if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
        data_ = nullptr;
        size_ = 0;
    }

    std::filesystem::path path_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace minitrain
