#!/usr/bin/python3
"""Goal: torch.save() files for minitrain's pickle-free reader (include/minitrain/io/torch_pickle.hpp), written
by PyTorch itself, so that the C++ tests read what MiniMind's trainer and transformers' save_pretrained
(safe_serialization=False) really write.

    /usr/bin/python3 tests/golden/make_golden_torch.py           # writes tests/golden/torch/*.pth
    /usr/bin/python3 tests/golden/make_golden_torch.py --check   # exit 0 iff regenerating gives identical bytes

Files (tests/golden/torch/):
  * minimind3_{f32,f16,bf16}.pth: tiny_qknorm.safetensors's weights as MiniMind's model_minimind.py names them
    (MiniMindForCausalLM.state_dict(): model.embed_tokens.weight, model.layers.N.self_attn.{q,k,v,o}_proj.weight,
    self_attn.{q,k}_norm.weight, {input,post_attention}_layernorm.weight, mlp.{gate,up,down}_proj.weight,
    model.norm.weight, lm_head.weight), in MiniMind's module order, lm_head.weight tied to the embedding (one
    storage, as MiniMind's `self.model.embed_tokens.weight = self.lm_head.weight`). f16 is what MiniMind's
    trainer saves ({k: v.half()}, trainer_utils.py); bf16 as torch writes BFloat16Storage.
  * views.pth: tensors at storage offsets inside one shared storage (a slice, a row of a matrix), a 0-d
    tensor, an empty tensor, F64 and I64 values: accepted, values known (listed in the test).
  * strided.pth: a transposed view (non-contiguous strides): refused naming the tensor.
  * nested.pth: {'model': state_dict, 'step': 3} (a training checkpoint): refused naming the key.
  * global.pth: an object whose __reduce__ names os.system (how a malicious pickle runs code): refused
    naming the global, never executed (this script only pickles it).
  * deflate.pth: minimind3_f32.pth's entries recompressed with deflate: refused naming the entry.
  * legacy.pth: the pre-1.6 non-zip format (_use_new_zipfile_serialization=False): refused. Its storage keys
    come from id(), so --check compares every file but this one.
"""
import argparse
import collections
import filecmp
import os
import sys
import tempfile
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402


def minimind_state_dict(src):
    """tiny_qknorm's parameters in MiniMindForCausalLM.state_dict() order, lm_head tied."""
    layers = 1 + max(int(k.split(".")[2]) for k in src if k.startswith("model.layers."))
    sd = collections.OrderedDict()
    sd["model.embed_tokens.weight"] = src["model.embed_tokens.weight"].clone()
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "self_attn.q_norm", "self_attn.k_norm", "input_layernorm", "post_attention_layernorm",
                  "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"]:
            sd[p + n + ".weight"] = src[p + n + ".weight"].clone()
    sd["model.norm.weight"] = src["model.norm.weight"].clone()
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # tied: the same storage
    return sd


class RunsCode:
    """Pickles as os.system('echo pwned'): what a hostile .pth does. Only pickled here, never loaded."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def write_all(out):
    os.makedirs(out, exist_ok=True)
    src = safetensors_io.load_file(os.path.join(HERE, "tiny_qknorm.safetensors"))
    sd = minimind_state_dict(src)
    torch.save(sd, os.path.join(out, "minimind3_f32.pth"))
    torch.save({k: v.half() for k, v in sd.items()}, os.path.join(out, "minimind3_f16.pth"))
    torch.save({k: v.bfloat16() for k, v in sd.items()}, os.path.join(out, "minimind3_bf16.pth"))

    base = torch.arange(24, dtype=torch.float32) * 0.5 - 3.0  # one storage of 24 floats
    views = collections.OrderedDict()
    views["slice"] = base[5:11]                  # offset 5, 6 elements: -0.5 .. 2.0
    views["row"] = base.view(4, 6)[2]            # offset 12: 3.0 .. 5.5
    views["block"] = base.view(4, 6)[1:3]        # offset 6, (2, 6), contiguous
    views["scalar"] = torch.tensor(7.25)         # 0-d
    views["empty"] = torch.zeros(0, 3)
    views["f64"] = torch.tensor([1.0 / 3.0, -2.5], dtype=torch.float64)
    views["i64"] = torch.tensor([-1, 5, 1 << 40], dtype=torch.int64)
    torch.save(views, os.path.join(out, "views.pth"))

    torch.save({"ok": torch.ones(2), "transposed": base.view(4, 6).t()}, os.path.join(out, "strided.pth"))
    torch.save({"model": sd, "step": 3}, os.path.join(out, "nested.pth"))
    torch.save({"weight": torch.ones(2), "payload": RunsCode()}, os.path.join(out, "global.pth"))

    with zipfile.ZipFile(os.path.join(out, "minimind3_f32.pth")) as zin, \
            zipfile.ZipFile(os.path.join(out, "deflate.pth"), "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, zin.read(info.filename))
    torch.save({"weight": torch.ones(2)}, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    out = os.path.join(HERE, "torch")
    if not args.check:
        write_all(out)
        print("wrote", sorted(os.listdir(out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_all(tmp)
        # legacy.pth names its storages by id(): its bytes change from run to run (only its format matters).
        bad = [f for f in sorted(os.listdir(tmp))
               if f != "legacy.pth" and not filecmp.cmp(os.path.join(tmp, f), os.path.join(out, f), False)]
        if bad:
            print("differ:", bad)
            sys.exit(1)
        print("identical")


if __name__ == "__main__":
    main()
