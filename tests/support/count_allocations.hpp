// tests/support/count_allocations.hpp
// Replaces the global operator new/delete of a test executable with versions that count every
// allocation in g_allocations; allocations_now() adds the blocks the CPU backend maps itself, so a
// test can assert that a steady-state step allocates nothing.
// Include it from exactly one translation unit of an executable (the test file; the doctest main
// lives in another object and does not include it).
#pragma once

// GCC flags free() in a replaced operator delete as "mismatched" once it inlines it: that is the point.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <atomic>
#include <cstdlib>
#include <new>

#include <minitrain/backend/cpu/cpu.hpp>

inline std::atomic<long> g_allocations{0};
/// The largest single request through operator new since it was last reset to 0 (memory bounds tests).
inline std::atomic<std::size_t> g_largest_allocation{0};

inline void note_allocation_size(std::size_t n) {
    std::size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
    while (n > seen && !g_largest_allocation.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
}

/// Allocations so far: through operator new, plus the large blocks the CPU backend maps itself.
inline long allocations_now() { return g_allocations + minitrain::CPU::mapped_allocations(); }

void* operator new(std::size_t n) {
    ++g_allocations;
    note_allocation_size(n);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a) {
    ++g_allocations;
    note_allocation_size(n);
    std::size_t al = std::size_t(a);
    if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
    throw std::bad_alloc();
}
// The nothrow forms too (std::stable_sort's buffer comes from one): otherwise they stay the runtime's
// own, and under AddressSanitizer (which supplies those) a block from one freed by the free() below is
// reported as an alloc-dealloc mismatch.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    ++g_allocations;
    note_allocation_size(n);
    return std::malloc(n ? n : 1);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    ++g_allocations;
    note_allocation_size(n);
    std::size_t al = std::size_t(a);
    return std::aligned_alloc(al, (n + al - 1) / al * al);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t& t) noexcept { return operator new(n, a, t); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
