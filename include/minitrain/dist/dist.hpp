// minitrain/dist/dist.hpp
// Data-parallel building blocks in one include: the launcher's environment (launch.hpp), the Comm
// interface and LocalComm (comm.hpp), MpiComm when the program links minitrain::mpi (mpi.hpp), the
// configuration check (config_check.hpp), run_main (run.hpp), and make_comm, which picks the
// communicator for how the process was started. NcclComm (GPU buffers) is included on its own:
// <minitrain/dist/nccl.hpp>.
#pragma once

#include <concepts>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include "comm.hpp"
#include "config_check.hpp"
#include "launch.hpp"
#include "run.hpp"

#if defined(MINITRAIN_HAS_MPI)
#include "mpi.hpp"
#endif

namespace minitrain {

/// The communicator for this process:
///   - no launcher variables (a plain `./program`): LocalComm, MPI is not even started;
///   - started by mpirun, srun, torchrun...: MpiComm when the program links minitrain::mpi, checked
///     against the launcher's world size (torchrun's processes are not MPI processes: MPI would see
///     a world of 1 each, and every process would train alone: that is an Error);
///   - started as several processes but built without MPI: an Error saying so (never N copies
///     silently training the same model).
/// Every translation unit of a program must agree on MINITRAIN_HAS_MPI (the CMake target sees to it).
inline std::unique_ptr<Comm> make_comm() {
    const LaunchInfo info = launch_info();
    if (info.launcher == Launcher::none) return std::make_unique<LocalComm>();
#if defined(MINITRAIN_HAS_MPI)
    auto comm = std::make_unique<MpiComm>();
    MT_CHECK(comm->world_size() == info.world_size, launcher_name(info.launcher), " started this process as rank ",
             info.rank, " of ", info.world_size, ", but MPI sees a world of size ", comm->world_size(),
             ": start the job with an MPI launcher (mpirun, or srun with the MPI plugin)");
    return comm;
#else
    MT_CHECK(info.world_size == 1, launcher_name(info.launcher), " started this process as rank ", info.rank, " of ",
             info.world_size, ", but this program was built without MPI: link it with minitrain::mpi "
             "(find_package(minitrain COMPONENTS mpi)) to train with several processes");
    return std::make_unique<LocalComm>();
#endif
}

/// A program's main in one line: makes the communicator (make_comm) and runs body(comm) under
/// run_main(comm, ...) (run.hpp), so that an error on any rank, including one in make_comm, ends the
/// job with its message:
///
///   int main(int argc, char** argv) {
///       return minitrain::run_main([&](minitrain::Comm& comm) { train(comm, argc, argv); });
///   }
template <class Body>
    requires std::invocable<Body&, Comm&>
int run_main(Body&& body) {
    std::unique_ptr<Comm> comm;
    try {
        comm = make_comm();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return run_main(*comm, [&] { return body(*comm); });
}

}  // namespace minitrain
