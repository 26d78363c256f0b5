// minitrain/dist/run.hpp
// run_main: an exception on one rank ends the whole job with that rank's message, instead of leaving
// the other ranks waiting forever in their next collective.
//
//   int main(int argc, char** argv) {
//       return run_main([&](Comm& comm) { train(comm, argc, argv); });   // dist/dist.hpp: makes the Comm
//   }
//
// or, with a communicator made by the program, run_main(comm, [&] { ... }).
#pragma once

#include <concepts>
#include <cstdio>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "comm.hpp"

namespace minitrain {

/// Runs body() and returns its exit status (0 when it returns void). If it throws:
///   - CollectiveError (every rank threw the same one): rank 0 prints "error: <message>", the ranks
///     meet at a barrier (so the message is out before any rank exits) and every rank returns 1;
///   - anything else, in a job of several ranks: comm.abort(message): stderr gets "rank R: <message>"
///     and the launcher ends every rank with exit status 1;
///   - anything else in a one-process job: prints "error: <message>" and returns 1.
template <class Body>
    requires std::invocable<Body&>
int run_main(Comm& comm, Body&& body) {
    std::string message;
    try {
        if constexpr (std::is_void_v<std::invoke_result_t<Body&>>) {
            body();
            return 0;
        } else {
            return int(body());
        }
    } catch (const CollectiveError& e) {
        if (comm.is_root()) {
            std::fprintf(stderr, "error: %s\n", e.what());
            std::fflush(stderr);
        }
        try {
            comm.barrier();
        } catch (const std::exception& b) {
            comm.abort(std::string(e.what()) + " (then the barrier failed: " + b.what() + ")");
        }
        return 1;
    } catch (const std::exception& e) {
        message = e.what();
    } catch (...) {
        message = "unknown exception (not derived from std::exception)";
    }
    if (comm.world_size() > 1) comm.abort(message, 1);
    std::fprintf(stderr, "error: %s\n", message.c_str());
    return 1;
}

}  // namespace minitrain
