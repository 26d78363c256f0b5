// Fuzz target: a safetensors file (the 8-byte header length, the JSON header, the data buffer), opened
// by SafeTensors and every tensor read into a host buffer with each conversion read_into offers.
#include <cstring>
#include <vector>

#include <minitrain/io/safetensors.hpp>

#include "fuzz/fuzz.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = mt_fuzz::write_file("model.safetensors", data, size);
    mt_fuzz::run([&] {
        SafeTensors st(path);
        MT_FUZZ_ASSERT(st.names().size() == st.size(), "names() and size() disagree");
        for (const auto& name : st.names()) {
            const auto& ti = st.info(name);
            if (ti.shape.size() > std::size_t(Shape::max_rank)) continue;
            std::int64_t numel = 1;
            for (auto d : ti.shape) numel *= d;
            MT_FUZZ_ASSERT(ti.bytes == std::size_t(numel) * detail::safetensors_dtype_size(ti.dtype), "byte count");
            for (DType dt : {DType::f32, DType::f64, DType::i32, DType::bf16}) {
                std::vector<std::byte> buf(std::size_t(numel) * dtype_size(dt) + 1);
                Tensor t;
                t.ptr = buf.data();
                for (auto d : ti.shape) t.shape.dims[std::size_t(t.shape.rank++)] = d;
                t.dtype = dt;
                t.device = Device::cpu;
                mt_fuzz::run([&] { st.read_into(name, t); });
            }
        }
        for (const auto& [k, v] : st.metadata()) (void)k, (void)v;
    });
    return 0;
}
