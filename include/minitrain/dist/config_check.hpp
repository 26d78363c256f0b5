// minitrain/dist/config_check.hpp
// check_same_config: every rank must train the same model on the same data with the same flags; a rank
// started with another --batch_size (a stale script on one node, a different checkout) would otherwise
// train silently wrong. Each rank describes its configuration as a JSON object; rank 0's is broadcast;
// every rank compares; on a difference every rank throws the same CollectiveError naming the first
// differing field and both values:
//
//   configuration differs between ranks: rank 1: --batch_size is 8, rank 0 has 4
//
// Fields are compared in rank 0's order (nested objects by dotted path, arrays by index), then the
// fields only the other rank has.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "comm.hpp"

namespace minitrain {

namespace detail {

/// JSON text that never throws (invalid UTF-8 in a string is replaced, not an exception on one rank).
inline std::string config_text(const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

inline std::string config_path(std::string_view prefix, const std::string& path, const std::string& key) {
    return path.empty() ? std::string(prefix) + key : path + "." + key;
}

/// The first difference between `mine` and `theirs` at `path`, as "<path> is X, rank R has Y", or "".
inline std::string config_difference_at(const nlohmann::json& mine, const nlohmann::json& theirs, int their_rank,
                                        std::string_view prefix, const std::string& path) {
    const std::string rank0 = "rank " + std::to_string(their_rank);
    if (mine.is_object() && theirs.is_object()) {
        for (auto it = theirs.begin(); it != theirs.end(); ++it) {
            const std::string p = config_path(prefix, path, it.key());
            auto m = mine.find(it.key());
            if (m == mine.end()) return p + " is not set, " + rank0 + " has " + config_text(it.value());
            std::string d = config_difference_at(*m, it.value(), their_rank, prefix, p);
            if (!d.empty()) return d;
        }
        for (auto it = mine.begin(); it != mine.end(); ++it)
            if (!theirs.contains(it.key()))
                return config_path(prefix, path, it.key()) + " is " + config_text(it.value()) + ", " + rank0 + " does not set it";
        return "";
    }
    if (mine.is_array() && theirs.is_array() && mine.size() == theirs.size()) {
        for (std::size_t i = 0; i < mine.size(); ++i) {
            std::string d =
                config_difference_at(mine[i], theirs[i], their_rank, prefix, path + "[" + std::to_string(i) + "]");
            if (!d.empty()) return d;
        }
        return "";
    }
    if (mine == theirs) return "";
    return (path.empty() ? std::string("the configuration") : path) + " is " + config_text(mine) + ", " + rank0 + " has " +
           config_text(theirs);
}

}  // namespace detail

/// The first field where `mine` (this rank's configuration) differs from `reference` (rank
/// reference_rank's), as "<field> is <mine>, rank <reference_rank> has <theirs>", or "" when they agree.
/// key_prefix goes before top-level field names: "--" makes them read as the flags they came from.
inline std::string config_difference(const nlohmann::json& mine, const nlohmann::json& reference, int reference_rank = 0,
                                     std::string_view key_prefix = "") {
    return detail::config_difference_at(mine, reference, reference_rank, key_prefix, "");
}

/// Collective: every rank calls it with its own configuration (a JSON object: flags, model shape, data
/// paths, anything that must agree). Returns when all ranks agree; otherwise throws, on every rank, a
/// CollectiveError "configuration differs between ranks: rank R: <field> is X, rank 0 has Y" for the
/// lowest rank R that differs. key_prefix: see config_difference.
inline void check_same_config(Comm& comm, const nlohmann::json& config, std::string_view key_prefix = "") {
    if (comm.world_size() == 1) return;
    std::string text = comm.is_root() ? detail::config_text(config) : std::string();
    comm.broadcast(text, 0);
    std::string diff;
    if (!comm.is_root()) {
        // Not an exception here: a rank that throws alone would leave the others waiting below.
        nlohmann::json reference = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        diff = reference.is_discarded() ? "rank 0's configuration did not arrive as JSON"
                                        : config_difference(config, reference, 0, key_prefix);
    }
    // The lowest rank that differs tells everyone what it found, so all ranks fail with one message.
    const std::int64_t none = comm.world_size();
    const std::int64_t first = comm.all_reduce(diff.empty() ? none : std::int64_t(comm.rank()), ReduceOp::min);
    if (first == none) return;
    comm.broadcast(diff, int(first));
    throw CollectiveError("configuration differs between ranks: rank " + std::to_string(first) + ": " + diff);
}

}  // namespace minitrain
