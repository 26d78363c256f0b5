// NcclComm (dist/nccl.hpp) compiled by nvcc. On the CPU: the id-file rendezvous (write, read, a stale
// run's file refused, the timeout's message). With a GPU: a one-rank NCCL communicator bootstrapped
// over LocalComm reduces, scatters, gathers and broadcasts device and host buffers. Without NCCL
// (MINITRAIN_HAS_NCCL unset) only a note is printed.
#include <doctest/doctest.h>

#if defined(MINITRAIN_HAS_NCCL)

#include <minitrain/dist/dist.hpp>
#include <minitrain/dist/nccl.hpp>

#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

#include "support/temp_dir.hpp"

using namespace minitrain;

static_assert(std::is_base_of_v<Comm, NcclComm>);

TEST_CASE("NCCL id file: rank 0 writes it atomically, the others read it under the same run key") {
    mt_test::TempDir dir;
    const std::string path = (dir.path / "nccl.id").string();
    ncclUniqueId id;
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; ++i) id.internal[i] = char(i * 7);
    write_nccl_id_file(path, id, "job42.0");
    ncclUniqueId got = read_nccl_id_file(path, "job42.0", std::chrono::milliseconds(100), 1);
    CHECK(std::memcmp(got.internal, id.internal, sizeof id.internal) == 0);
    CHECK_THROWS_WITH(read_nccl_id_file(path, "job43.0", std::chrono::milliseconds(50), 2),
                      doctest::Contains("found a file of another run (run key differs)"));
    CHECK_THROWS_WITH(read_nccl_id_file((dir.path / "missing.id").string(), "", std::chrono::milliseconds(30), 1),
                      doctest::Contains("rank 1 waited 0.03 s for rank 0's NCCL id in"));
    CHECK_THROWS_WITH(write_nccl_id_file((dir.path / "no/such/dir/id").string(), id, ""),
                      doctest::Contains("cannot create"));
}

TEST_CASE("NcclComm with one rank: collectives on device and host buffers") {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        cudaGetLastError();
        MESSAGE("no CUDA device: the one-rank NCCL run is not exercised here");
        return;
    }
    LocalComm host;
    NcclComm nccl(host);
    Comm& comm = nccl;
    CHECK((comm.world_size() == 1 && comm.rank() == 0 && std::string(comm.backend()) == "nccl"));

    const std::size_t n = 1000003;
    std::vector<float> h(n);
    for (std::size_t i = 0; i < n; ++i) h[i] = float(i % 1000) * 0.25f;
    float* d = nullptr;
    REQUIRE(cudaMalloc(&d, n * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    cudaStream_t compute = nullptr;
    REQUIRE(cudaStreamCreate(&compute) == cudaSuccess);
    nccl.wait_for(compute);
    comm.all_reduce_sum(d, n);
    comm.reduce_scatter_sum(d, n);
    comm.all_gather(d, n);
    nccl.then_on(compute);
    REQUIRE(cudaStreamSynchronize(compute) == cudaSuccess);
    cudaStreamDestroy(compute);
    std::vector<float> back(n);
    REQUIRE(cudaMemcpy(back.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(back == h);
    cudaFree(d);

    std::vector<double> loss = {1.5, 2.25};  // host buffers are staged
    comm.all_reduce_mean(loss);
    CHECK(loss == std::vector<double>{1.5, 2.25});
    CHECK(comm.all_reduce_sum(std::int64_t(7)) == 7);
    std::string s = "config";
    comm.broadcast(s);
    CHECK(s == "config");
    comm.barrier();
}

#else

TEST_CASE("NcclComm: not built (NCCL not found)") { MESSAGE("NCCL was not found: dist/nccl.hpp is not compiled"); }

#endif
