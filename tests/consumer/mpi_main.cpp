// A user's program linking minitrain::mpi: the target must define MINITRAIN_HAS_MPI and bring MPI's
// headers and libraries, so that the umbrella header offers MpiComm. Run as a plain process, MPI starts
// as a one-process world (no mpirun needed).
#include <minitrain/minitrain.hpp>

#include <cstdio>

#if !defined(MINITRAIN_HAS_MPI)
#error "minitrain::mpi must define MINITRAIN_HAS_MPI"
#endif

int main() {
    minitrain::MpiComm comm;
    double x = 2.5;
    comm.all_reduce_sum(&x, 1);
    if (comm.world_size() != 1 || x != 2.5) {
        std::printf("consumer (mpi): FAILED world size %d, sum %g\n", comm.world_size(), x);
        return 1;
    }
    std::printf("consumer (mpi): MpiComm over %s, world size 1\n", comm.backend());
    return 0;
}
