// Fuzz target: the training state of a checkpoint, the JSON that save_checkpoint stores as the
// "minitrain.training_state" metadata of training_state.safetensors. The input replaces that metadata
// (the optimizer tensors stay valid), then load_checkpoint restores the folder and the data positions
// are decoded as the trainer decodes them (TokenLoader and ExampleLoader positions).
#include <minitrain/data/sft.hpp>
#include <minitrain/data/token_loader.hpp>

#include "fuzz/model_files.hpp"

using namespace minitrain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto& f = mt_fuzz::files();
    static const std::vector<std::pair<std::string, std::vector<float>>> slabs = [&] {
        std::vector<std::pair<std::string, std::vector<float>>> out;
        for (const auto& [name, t] : f.optimizer.state())
            out.emplace_back("optimizer." + name, std::vector<float>(t.data<float>(), t.data<float>() + t.numel()));
        return out;
    }();
    mt_fuzz::run([&] {
        std::vector<NamedTensor> tensors;
        for (const auto& [name, v] : slabs) {
            Tensor t;
            t.ptr = const_cast<float*>(v.data());
            t.shape = Shape{std::int64_t(v.size())};
            t.dtype = DType::f32;
            t.device = Device::cpu;
            tensors.push_back({name, t});
        }
        save_safetensors(f.checkpoint / "training_state.safetensors", tensors,
                         {{"format", "pt"},
                          {"minitrain.training_state", std::string(reinterpret_cast<const char*>(data), size)}});
        TrainingState s = load_checkpoint(f.checkpoint, f.model, f.optimizer);
        mt_fuzz::run([&] { (void)s.data.get<TokenLoader::Position>(); });
        mt_fuzz::run([&] { (void)s.data.get<ExampleLoader::Position>(); });
    });
    return 0;
}
