// minitrain/io/atomic_file.hpp
// write_file_atomic: replace a file so that readers (and a crash at any instant) see either the whole old
// contents or the whole new contents, never a half-written file. The data goes to `<path>.tmp.<pid>` in
// the same directory (rename is only atomic within one filesystem), is flushed and fsync'ed, then
// renamed over `path`, and the directory is fsync'ed so the rename itself survives a power cut.
#pragma once

#include <cerrno>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <functional>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.hpp"
#include "mmap.hpp"

namespace minitrain {

namespace detail {

/// An output streambuf over a POSIX file descriptor: std::ofstream cannot give us the descriptor that
/// fsync needs. Large writes (tensor payloads) bypass the buffer. The first write error is remembered
/// (errno) and reported by the caller; the stream just sees EOF/failure.
class FdOutBuf : public std::streambuf {
public:
    explicit FdOutBuf(int fd) : fd_(fd), buf_(std::size_t(1) << 16) { setp(buf_.data(), buf_.data() + buf_.size()); }
    int error() const { return err_; }

protected:
    int_type overflow(int_type ch) override {
        if (!drain()) return traits_type::eof();
        if (!traits_type::eq_int_type(ch, traits_type::eof())) {
            *pptr() = traits_type::to_char_type(ch);
            pbump(1);
        }
        return traits_type::not_eof(ch);
    }
    std::streamsize xsputn(const char* s, std::streamsize n) override {
        if (n < std::streamsize(buf_.size()) / 2) return std::streambuf::xsputn(s, n);
        if (!drain() || !write_all(s, std::size_t(n))) return 0;
        return n;
    }
    int sync() override { return drain() ? 0 : -1; }

private:
    bool drain() {
        std::size_t n = std::size_t(pptr() - pbase());
        if (n && !write_all(pbase(), n)) return false;
        setp(buf_.data(), buf_.data() + buf_.size());
        return true;
    }
    bool write_all(const char* s, std::size_t n) {
        if (err_) return false;
        while (n > 0) {
            ssize_t w = ::write(fd_, s, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                err_ = errno;
                return false;
            }
            s += w;
            n -= std::size_t(w);
        }
        return true;
    }

    int fd_;
    std::vector<char> buf_;
    int err_ = 0;
};

/// fsync a directory so that a rename inside it is durable. Filesystems that cannot sync directories
/// answer EINVAL; that is not an error worth failing a checkpoint for.
inline int fsync_directory(const std::filesystem::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = 0;
    if (::fsync(fd) != 0 && errno != EINVAL) err = errno;
    ::close(fd);
    return err;
}

}  // namespace detail

/// Writes a file atomically: `write` fills the stream, then the data is flushed, fsync'ed and renamed over
/// `path`. On any failure (including an exception thrown by `write`) the temporary file is removed, the
/// previous contents of `path` are untouched, and minitrain::Error naming `path` is thrown (an exception
/// that is not a std::exception is rethrown unchanged after the cleanup).
inline void write_file_atomic(const std::filesystem::path& path, const std::function<void(std::ostream&)>& write) {
    namespace fs = std::filesystem;
    MT_CHECK(!path.empty() && path.has_filename(), "write_file_atomic: \"", path.string(), "\" is not a file path");
    fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
    fs::path tmp = path;
    tmp += ".tmp." + std::to_string(::getpid());
    const std::string where = path.string();

    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        int err = errno;
        detail::fail(where, ": cannot create temporary file ", tmp.string(), ": ", detail::errno_text(err));
    }
    // From here on every failure path closes fd (if still open) and removes the temporary file.
    auto abandon = [&] {
        if (fd >= 0) ::close(fd);
        fd = -1;
        ::unlink(tmp.c_str());
    };

    try {
        detail::FdOutBuf buf(fd);
        std::ostream os(&buf);
        write(os);
        os.flush();
        if (buf.error()) detail::fail(where, ": write failed: ", detail::errno_text(buf.error()));
        if (!os) detail::fail(where, ": the writer left the output stream in a failed state");
    } catch (const std::exception& e) {
        abandon();
        // Errors we raised already name the path; anything from the callback gets it prefixed.
        std::string what = e.what();
        if (what.rfind(where + ":", 0) == 0) throw Error(what);
        throw Error(where + ": writing failed, previous contents kept: " + what);
    } catch (...) {
        abandon();
        throw;
    }

    if (::fsync(fd) != 0) {
        int err = errno;
        abandon();
        detail::fail(where, ": fsync failed: ", detail::errno_text(err));
    }
    int closed = ::close(fd);
    fd = -1;
    if (closed != 0) {
        int err = errno;
        abandon();
        detail::fail(where, ": close failed: ", detail::errno_text(err));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        abandon();
        detail::fail(where, ": cannot rename ", tmp.string(), " over it: ", detail::errno_text(err));
    }
    if (int err = detail::fsync_directory(dir))
        detail::fail(where, ": written, but syncing directory ", dir.string(), " failed: ", detail::errno_text(err));
}

}  // namespace minitrain
