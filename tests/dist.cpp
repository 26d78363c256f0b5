// The distributed layer without MPI: launcher environments (each launcher, precedence, garbled values
// named), the ZeRO-1 shard rule, LocalComm's identity collectives, the configuration diff and the
// one-process paths of check_same_config, run_main and make_comm. tests/dist/collectives.cpp runs the
// same interface over MPI with 2 and 3 processes.
#include <doctest/doctest.h>

#include <minitrain/dist/dist.hpp>

#include <cstdint>
#include <map>
#include <numeric>
#include <string>
#include <vector>

using namespace minitrain;

namespace {
using Env = std::map<std::string, std::string>;

LaunchInfo from(const Env& env) {
    return launch_info([&](const char* name) -> const char* {
        auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
    });
}

std::string error_of(const Env& env) {
    try {
        from(env);
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST_CASE("launch_info: no launcher is rank 0 of 1") {
    LaunchInfo i = from({});
    CHECK(i.launcher == Launcher::none);
    CHECK(i.rank == 0);
    CHECK(i.world_size == 1);
    CHECK(i.local_rank == 0);
    CHECK(i.local_world_size == 1);
}

TEST_CASE("launch_info: each launcher's variables") {
    LaunchInfo o = from({{"OMPI_COMM_WORLD_RANK", "5"}, {"OMPI_COMM_WORLD_SIZE", "8"},
                         {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
    CHECK(o.launcher == Launcher::openmpi);
    CHECK((o.rank == 5 && o.world_size == 8 && o.local_rank == 1 && o.local_world_size == 4));

    LaunchInfo p = from({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "1"}});
    CHECK(p.launcher == Launcher::pmi);
    CHECK((p.rank == 2 && p.world_size == 3 && p.local_rank == 0 && p.local_world_size == 1));

    LaunchInfo t = from({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "3"}, {"LOCAL_WORLD_SIZE", "4"}});
    CHECK(t.launcher == Launcher::torchrun);
    CHECK((t.rank == 3 && t.world_size == 4 && t.local_rank == 3 && t.local_world_size == 4));

    LaunchInfo s = from({{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "16"},
                         {"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_LOCALID", "2"}});
    CHECK(s.launcher == Launcher::slurm);
    CHECK((s.rank == 6 && s.world_size == 8 && s.local_rank == 2 && s.local_world_size == 0));
    LaunchInfo s2 = from({{"SLURM_STEPID", "1"}, {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}});
    CHECK((s2.launcher == Launcher::slurm && s2.rank == 1 && s2.world_size == 2 && s2.local_rank == 0));
}

TEST_CASE("launch_info: precedence OpenMPI > PMI > torchrun > Slurm; an sbatch script is one process") {
    Env slurm_batch = {{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"}};  // no step id
    CHECK(from(slurm_batch).launcher == Launcher::none);

    Env env = slurm_batch;
    env["SLURM_STEP_ID"] = "0";
    CHECK(from(env).launcher == Launcher::slurm);
    env["RANK"] = "1";
    env["WORLD_SIZE"] = "2";
    CHECK(from(env).launcher == Launcher::torchrun);
    CHECK(from(env).rank == 1);
    env["PMI_RANK"] = "0";
    env["PMI_SIZE"] = "3";
    CHECK(from(env).launcher == Launcher::pmi);
    env["OMPI_COMM_WORLD_RANK"] = "2";
    env["OMPI_COMM_WORLD_SIZE"] = "6";
    LaunchInfo o = from(env);
    CHECK(o.launcher == Launcher::openmpi);
    CHECK((o.rank == 2 && o.world_size == 6));
}

TEST_CASE("launch_info: a garbled or half-set variable is an Error naming it") {
    CHECK(error_of({{"OMPI_COMM_WORLD_RANK", "x1"}, {"OMPI_COMM_WORLD_SIZE", "2"}}) ==
          "environment variable OMPI_COMM_WORLD_RANK is 'x1', expected an integer >= 0");
    CHECK(error_of({{"RANK", "1"}, {"WORLD_SIZE", "2 "}}) ==
          "environment variable WORLD_SIZE is '2 ', expected an integer >= 0");
    CHECK(error_of({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}) == "environment variable RANK is '-1', expected an integer >= 0");
    CHECK(error_of({{"RANK", ""}, {"WORLD_SIZE", "2"}}) == "environment variable RANK is '', expected an integer >= 0");
    CHECK(error_of({{"PMI_RANK", "99999999999"}, {"PMI_SIZE", "2"}}) ==
          "environment variable PMI_RANK is '99999999999', expected an integer >= 0");
    CHECK(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}}) ==
          "environment variable RANK is 2 but WORLD_SIZE is 2: a rank must be below the world size");
    CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "0"}}) == "environment variable WORLD_SIZE is 0, expected a world size >= 1");
    CHECK(error_of({{"RANK", "0"}}) == "launcher torchrun: WORLD_SIZE is not set but RANK is; both are needed");
    CHECK(error_of({{"PMI_SIZE", "4"}}) == "launcher PMI (MPICH/Hydra): PMI_RANK is not set but PMI_SIZE is; both are needed");
    CHECK(error_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}) ==
          "environment variable OMPI_COMM_WORLD_LOCAL_RANK is 2 but OMPI_COMM_WORLD_LOCAL_SIZE is 2: a local rank must "
          "be below the local world size");
    CHECK(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_WORLD_SIZE", "3"}}) ==
          "environment variable LOCAL_WORLD_SIZE is 3, expected 1 to WORLD_SIZE (2)");
    CHECK(error_of({{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "2"}}) ==
          "environment variable SLURM_LOCALID is 2 but SLURM_NTASKS is 2: a local rank must be below the world size");
}

TEST_CASE("shard_of: stride ceil(n / W), the last shards shorter or empty, the shards tile [0, n)") {
    CHECK(shard_stride(7, 3) == 3);
    CHECK((shard_of(7, 3, 0).begin == 0 && shard_of(7, 3, 0).end == 3));
    CHECK((shard_of(7, 3, 1).begin == 3 && shard_of(7, 3, 1).end == 6));
    CHECK((shard_of(7, 3, 2).begin == 6 && shard_of(7, 3, 2).end == 7));
    CHECK((shard_of(1, 3, 1).begin == 1 && shard_of(1, 3, 1).size() == 0));
    CHECK((shard_of(10, 4, 3).begin == 9 && shard_of(10, 4, 3).end == 10));  // c = 3: 3 3 3 1
    CHECK(shard_of(0, 2, 1).size() == 0);
    for (std::size_t n : {0, 1, 2, 5, 7, 64, 1000003})
        for (int w = 1; w <= 9; ++w) {
            std::size_t next = 0;
            for (int r = 0; r < w; ++r) {
                Shard s = shard_of(n, w, r);
                CHECK(s.begin == next);
                CHECK(s.size() <= shard_stride(n, w));
                next = s.end;
            }
            CHECK(next == n);
        }
    CHECK_THROWS_WITH(shard_of(5, 2, 2), "shard_of: rank 2 outside [0, 2)");
}

TEST_CASE("LocalComm: every collective is the identity") {
    LocalComm c;
    Comm& comm = c;
    CHECK((comm.rank() == 0 && comm.world_size() == 1 && comm.local_rank() == 0 && comm.is_root()));
    CHECK(std::string(comm.backend()) == "local");
    std::vector<float> f = {1.5f, -2.f, 3.f};
    std::vector<double> d = {0.25, 7.0};
    std::vector<std::int64_t> i = {1, -2, 1 << 30};
    comm.all_reduce_sum(f);
    comm.all_reduce_mean(d);
    comm.all_reduce_sum(i.data(), i.size());
    CHECK(f == std::vector<float>{1.5f, -2.f, 3.f});
    CHECK(d == std::vector<double>{0.25, 7.0});
    CHECK(i == std::vector<std::int64_t>{1, -2, 1 << 30});
    CHECK(comm.all_reduce_sum(41.5) == 41.5);
    CHECK(comm.all_reduce(std::int64_t(3), ReduceOp::max) == 3);
    comm.reduce_scatter_sum(f.data(), f.size());
    CHECK((comm.shard(f.size()).begin == 0 && comm.shard(f.size()).end == 3));
    comm.all_gather(f.data(), f.size());
    CHECK(f == std::vector<float>{1.5f, -2.f, 3.f});
    std::string s = "config hash";
    comm.broadcast(s);
    CHECK(s == "config hash");
    comm.barrier();
    comm.all_reduce_sum(static_cast<float*>(nullptr), 0);  // an empty buffer is fine
    CHECK_THROWS_WITH(comm.all_reduce_sum(static_cast<float*>(nullptr), 3), "Comm::all_reduce: null buffer of 3 elements");
    CHECK_THROWS_WITH(comm.broadcast(s, 1), "Comm::broadcast: root 1 outside [0, 1)");
    CHECK_THROWS_WITH(comm.all_reduce_mean(i.data(), i.size()),
                      "Comm::all_reduce: mean of int64 values is not defined; reduce the sum");
}

TEST_CASE("config_difference: the first differing field, with both values") {
    nlohmann::json r0 = {{"batch_size", 4}, {"lr", 5e-4}, {"model", {{"dim", 512}, {"layers", 8}}}, {"data", "a/*.bin"}};
    CHECK(config_difference(r0, r0) == "");
    nlohmann::json r1 = r0;
    r1["batch_size"] = 8;
    CHECK(config_difference(r1, r0, 0, "--") == "--batch_size is 8, rank 0 has 4");
    CHECK(config_difference(r1, r0) == "batch_size is 8, rank 0 has 4");
    r1 = r0;
    r1["model"]["layers"] = 4;
    CHECK(config_difference(r1, r0, 0, "--") == "--model.layers is 4, rank 0 has 8");
    r1 = r0;
    r1["data"] = "b/*.bin";
    CHECK(config_difference(r1, r0) == "data is \"b/*.bin\", rank 0 has \"a/*.bin\"");
    r1 = r0;
    r1.erase("lr");
    CHECK(config_difference(r1, r0) == "lr is not set, rank 0 has 0.0005");
    r1 = r0;
    r1["zero_stage"] = 1;
    CHECK(config_difference(r1, r0) == "zero_stage is 1, rank 0 does not set it");
    CHECK(config_difference(nlohmann::json{{"shape", {1, 2, 3}}}, nlohmann::json{{"shape", {1, 5, 3}}}) ==
          "shape[1] is 2, rank 0 has 5");
    CHECK(config_difference(nlohmann::json{{"shape", {1, 2}}}, nlohmann::json{{"shape", {1, 2, 3}}}) ==
          "shape is [1,2], rank 0 has [1,2,3]");
    CHECK(config_difference(nlohmann::json(1), nlohmann::json(2)) == "the configuration is 1, rank 0 has 2");
}

TEST_CASE("one process: check_same_config passes, run_main returns the body's status or 1 with the message") {
    LocalComm comm;
    check_same_config(comm, nlohmann::json{{"batch_size", 4}});
    CHECK(run_main(comm, [] {}) == 0);
    CHECK(run_main(comm, [] { return 3; }) == 3);
    CHECK(run_main(comm, []() -> int { throw Error("bad shard"); }) == 1);
    CHECK(run_main(comm, [] { throw CollectiveError("all of us"); }) == 1);
}

TEST_CASE("make_comm and run_main(body) without a launcher: LocalComm") {
    // The test runs as a plain process (CTest without mpirun): no launcher variables.
    if (launch_info().launcher != Launcher::none) return;
    auto comm = make_comm();
    CHECK(std::string(comm->backend()) == "local");
    CHECK(comm->world_size() == 1);
    int seen = -1;
    CHECK(run_main([&](Comm& c) { seen = c.world_size(); }) == 0);
    CHECK(seen == 1);
    CHECK(run_main([](Comm&) { return 2; }) == 2);
    CHECK(run_main([](Comm&) { throw Error("no data"); }) == 1);
    CHECK(&local_comm() == &local_comm());
    CHECK(local_comm().world_size() == 1);
}
