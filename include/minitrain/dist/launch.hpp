// minitrain/dist/launch.hpp
// Who am I in a multi-process job? launch_info() reads the rank, world size, local rank and local world
// size that the launcher put in this process's environment, before any communicator exists (a GPU
// process picks its device from the local rank before MPI or NCCL start; NCCL without MPI needs rank
// and world size to meet the others).
//
// Launchers, in order of precedence (the first one whose variables are present wins):
//   1. OpenMPI's mpirun        OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE
//   2. MPICH / Hydra / PMI     PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
//   3. torchrun                RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE
//   4. Slurm's srun            SLURM_PROCID, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS), SLURM_LOCALID
// The innermost launcher describes this process: mpirun or torchrun started inside a Slurm allocation
// still sees the allocation's SLURM_* variables, which describe the batch script, not this process. For
// the same reason Slurm's variables count only inside an srun step (SLURM_STEP_ID or SLURM_STEPID set):
// an sbatch script itself has SLURM_PROCID=0 and SLURM_NTASKS=N but is one process.
//
// Every value is checked: an integer, rank < world size, local rank < local world size. A garbled or
// half-set variable is an Error naming it, never a silent single-process run.
#pragma once

#include <charconv>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>

#include "../core/error.hpp"

namespace minitrain {

/// The launcher whose variables launch_info() used.
enum class Launcher { none, openmpi, pmi, torchrun, slurm };

inline const char* launcher_name(Launcher l) {
    switch (l) {
        case Launcher::openmpi: return "OpenMPI";
        case Launcher::pmi: return "PMI (MPICH/Hydra)";
        case Launcher::torchrun: return "torchrun";
        case Launcher::slurm: return "Slurm";
        case Launcher::none: break;
    }
    return "none";
}

/// This process's place in the job, as the launcher describes it. Without a launcher: rank 0 of 1.
struct LaunchInfo {
    Launcher launcher = Launcher::none;
    int rank = 0;
    int world_size = 1;
    int local_rank = 0;        // this process's index on its node (0 when the launcher does not say)
    int local_world_size = 1;  // processes on this node (0 when the launcher does not say)
};

namespace detail {

/// A non-negative int from an environment variable's text; an Error naming the variable otherwise.
inline int parse_launch_int(std::string_view name, std::string_view text) {
    int v = -1;
    const char* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || p != end || v < 0)
        fail("environment variable ", name, " is '", text, "', expected an integer >= 0");
    return v;
}

}  // namespace detail

/// launch_info with a custom environment lookup (returns nullptr for an unset variable): for tests.
inline LaunchInfo launch_info(const std::function<const char*(const char*)>& getenv) {
    auto get = [&](const char* name) -> const char* { return getenv(name); };
    struct Names {
        Launcher launcher;
        const char* rank;
        const char* size;
        const char* local_rank;
        const char* local_size;  // nullptr: the launcher has none
    };
    static constexpr Names table[] = {
        {Launcher::openmpi, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
         "OMPI_COMM_WORLD_LOCAL_SIZE"},
        {Launcher::pmi, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
        {Launcher::torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
        {Launcher::slurm, "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", nullptr},
    };
    for (const Names& n : table) {
        const char* size_name = n.size;
        if (n.launcher == Launcher::slurm) {
            if (!get("SLURM_STEP_ID") && !get("SLURM_STEPID")) continue;  // an sbatch script, not an srun task
            if (!get(size_name)) size_name = "SLURM_NTASKS";
        }
        const char* r = get(n.rank);
        const char* s = get(size_name);
        if (!r && !s) continue;
        MT_CHECK(r && s, "launcher ", launcher_name(n.launcher), ": ", r ? size_name : n.rank, " is not set but ",
                 r ? n.rank : size_name, " is; both are needed");
        LaunchInfo info;
        info.launcher = n.launcher;
        info.rank = detail::parse_launch_int(n.rank, r);
        info.world_size = detail::parse_launch_int(size_name, s);
        MT_CHECK(info.world_size >= 1, "environment variable ", size_name, " is 0, expected a world size >= 1");
        MT_CHECK(info.rank < info.world_size, "environment variable ", n.rank, " is ", info.rank, " but ", size_name,
                 " is ", info.world_size, ": a rank must be below the world size");
        const char* lr = get(n.local_rank);
        const char* ls = n.local_size ? get(n.local_size) : nullptr;
        info.local_rank = lr ? detail::parse_launch_int(n.local_rank, lr) : 0;
        info.local_world_size = ls ? detail::parse_launch_int(n.local_size, ls) : 0;
        if (ls) {
            MT_CHECK(info.local_world_size >= 1 && info.local_world_size <= info.world_size, "environment variable ",
                     n.local_size, " is ", info.local_world_size, ", expected 1 to ", size_name, " (",
                     info.world_size, ")");
            MT_CHECK(info.local_rank < info.local_world_size, "environment variable ", n.local_rank, " is ",
                     info.local_rank, " but ", n.local_size, " is ", info.local_world_size,
                     ": a local rank must be below the local world size");
        } else {
            MT_CHECK(info.local_rank < info.world_size, "environment variable ", n.local_rank, " is ",
                     info.local_rank, " but ", size_name, " is ", info.world_size,
                     ": a local rank must be below the world size");
        }
        return info;
    }
    return LaunchInfo{};
}

/// This process's rank, world size and local rank from the launcher's environment variables (see the
/// file comment for the launchers and their precedence). Throws Error on a garbled variable.
inline LaunchInfo launch_info() {
    return launch_info([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace minitrain
