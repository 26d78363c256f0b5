// Fuzz target: torch.save() files (io/torch_pickle.hpp). The first byte picks what the rest is:
//   'Z'   a whole file: zip central directory, entries, CRC-32, data.pkl, storages; read as a state dict and
//         every tensor converted to f64 (read_into's checks)
//   else  data.pkl alone, run by the pickle VM (the zip's CRC-32 would stop most mutations before it)
#include <cstring>
#include <vector>

#include <minitrain/io/torch_pickle.hpp>

#include "fuzz/fuzz.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const auto* rest = reinterpret_cast<const std::byte*>(data + 1);
    if (data[0] != 'Z') {
        mt_fuzz::run([&] {
            const detail::PickleResult r = detail::run_torch_pickle(rest, size - 1, "data.pkl");
            MT_FUZZ_ASSERT(r.root != nullptr, "STOP returned no object");
        });
        return 0;
    }
    const auto path = mt_fuzz::write_file("model.pth", data + 1, size - 1);
    mt_fuzz::run([&] {
        const SafeTensors st = read_torch_state_dict(path);
        MT_FUZZ_ASSERT(st.names().size() == st.size(), "names() and size() disagree");
        for (const auto& name : st.names()) {
            const auto& ti = st.info(name);
            if (ti.shape.size() > std::size_t(Shape::max_rank)) continue;
            std::int64_t numel = 1;
            for (auto d : ti.shape) numel *= d;
            MT_FUZZ_ASSERT(ti.bytes == std::size_t(numel) * detail::safetensors_dtype_size(ti.dtype), "byte count");
            std::vector<double> buf(std::size_t(numel) + 1);
            Tensor t;
            t.ptr = buf.data();
            for (auto d : ti.shape) t.shape.dims[std::size_t(t.shape.rank++)] = d;
            t.dtype = DType::f64;
            t.device = Device::cpu;
            mt_fuzz::run([&] { st.read_into(name, t); });
        }
    });
    return 0;
}
