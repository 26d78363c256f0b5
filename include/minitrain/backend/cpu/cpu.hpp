// minitrain/backend/cpu/cpu.hpp
// The CPU backend policy: memory, threads and elementwise helpers. Its ops live one per file beside this
// one as overloads `<op>_forward(CPU, ...)` / `<op>_backward(CPU, ...)`, so model code written against a
// backend tag finds the right implementation by overload resolution.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <new>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <Eigen/Core>

#include "../../core/tensor.hpp"

namespace minitrain {

/// CPU backend: Eigen for matrix products, OpenMP for loops. All storage is 64-byte aligned.
struct CPU {
    static constexpr Device device = Device::cpu;
    static constexpr std::size_t alignment = 64;

    /// Blocks of at least this size (arena blocks, parameter slabs, batches) are mapped from the kernel
    /// and unmapped when freed. Through malloc their fate would hang on glibc's mmap threshold, which
    /// rises to the size of any large block freed (a resized arena, a workspace): the step's buffers
    /// then land in the heap, which does not shrink (+250 MiB of peak RSS measured in bench_lora).
    static constexpr std::size_t map_bytes = std::size_t(1) << 20;

    /// Raw storage, 64-byte aligned (mapped blocks are page-aligned). Smaller blocks go through the
    /// aligned global operator new, mapped ones are counted in mapped_allocations(): allocation tests
    /// see both. deallocate must be given the size that was allocated.
    static void* allocate(std::size_t bytes) {
        if (bytes >= map_bytes) {
            void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) throw std::bad_alloc();
            mapped_allocations().fetch_add(1, std::memory_order_relaxed);
            return p;
        }
        return ::operator new(std::max<std::size_t>(bytes, 1), std::align_val_t{alignment});
    }
    static void deallocate(void* p, std::size_t bytes) noexcept {
        if (bytes >= map_bytes)
            ::munmap(p, bytes);
        else
            ::operator delete(p, std::align_val_t{alignment});
    }
    /// How many blocks allocate() has mapped so far.
    static std::atomic<long>& mapped_allocations() {
        static std::atomic<long> n{0};
        return n;
    }

    static void zero(const Tensor& t) { std::memset(t.ptr, 0, t.bytes()); }
    static void copy(const Tensor& dst, const Tensor& src) {
        MT_CHECK(dst.bytes() == src.bytes(), "CPU::copy: ", dst.bytes(), " bytes into ", src.bytes());
        std::memcpy(dst.ptr, src.ptr, src.bytes());
    }
    /// Host <-> backend transfers are plain copies on the CPU.
    static void to_host(void* host, const Tensor& src) { std::memcpy(host, src.ptr, src.bytes()); }
    static void from_host(const Tensor& dst, const void* host) { std::memcpy(dst.ptr, host, dst.bytes()); }
    static void synchronize() {}

    /// Threads used by OpenMP loops and by Eigen's matrix products.
    static void set_threads(int n) {
        MT_CHECK(n >= 1, "CPU::set_threads: thread count must be at least 1, got ", n);
#if defined(_OPENMP)
        omp_set_num_threads(n);
#endif
        Eigen::setNbThreads(n);
    }
    static int threads() {
#if defined(_OPENMP)
        return omp_get_max_threads();
#else
        return 1;
#endif
    }
};

/// Fill a floating tensor with a constant.
inline void fill(CPU, const Tensor& t, double value) {
    dispatch_floating(t.dtype, "fill", [&]<class T>() { std::fill_n(t.data<T>(), t.numel(), T(value)); });
}

}  // namespace minitrain
