// minitrain/io/crash_point.hpp
// Fault injection for the kill tests: crash_point("name") kills the process with SIGKILL (no cleanup, no
// flush: as a power cut or the OOM killer would) when MINITRAIN_CRASH_AT names that point.
//
//   MINITRAIN_CRASH_AT=prune.renamed        the first time the point is reached
//   MINITRAIN_CRASH_AT=save.aside:3         the third time
//
// The points sit between the steps of every save and prune (io/checkpoint.hpp), where a kill is most likely
// to tear something. Without the variable a crash point costs one getenv.
#pragma once

#include <csignal>
#include <cstdlib>
#include <string>
#include <string_view>

namespace minitrain::detail {

inline void crash_point(std::string_view name) {
    // Read each time (saves are rare): a test sets the variable in a forked child after the parent ran.
    const char* v = std::getenv("MINITRAIN_CRASH_AT");
    if (!v || !*v) return;
    const std::string_view spec(v);
    const auto colon = spec.find(':');
    if (spec.substr(0, colon) != name) return;
    static long hits = 0;
    const long nth = colon == std::string_view::npos ? 1 : std::atol(v + colon + 1);
    if (++hits == nth) std::raise(SIGKILL);
}

}  // namespace minitrain::detail
