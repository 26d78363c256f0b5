"""Goal: read and write the safetensors format by hand, so the golden files need no `safetensors` package.

The format (https://github.com/huggingface/safetensors, "Format" section):
    [8 bytes]  N, the header length, unsigned little-endian 64-bit
    [N bytes]  a UTF-8 JSON object:
                 name -> {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
                 "__metadata__" -> {str: str}   (optional, strings only)
               padded with spaces (0x20) so that 8 + N is a multiple of 8, which keeps every tensor of
               a file that starts aligned at least 8-byte aligned when the data is packed largest-first
    [rest]     the byte buffer; data_offsets are relative to its start, end-exclusive; tensors are
               row-major, little-endian, and together cover the buffer without holes or overlaps.

Only the dtypes minitrain uses are supported: F32, F64, I32, I64, BF16. Tensors are torch tensors
(torch is the oracle in this folder anyway; bf16 has no numpy type).
"""
import json
import struct
import sys

import torch

# ----------------------------------------------------------------------------
# dtype table

_DTYPES = {
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
    "I32": (torch.int32, 4),
    "I64": (torch.int64, 8),
    "BF16": (torch.bfloat16, 2),
}
_NAMES = {tdt: (name, size) for name, (tdt, size) in _DTYPES.items()}

assert sys.byteorder == "little", "safetensors data is little-endian; this writer assumes a little-endian host"


def _to_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        # numpy has no bf16: reinterpret the same 2 bytes as int16, which numpy can dump.
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def _from_bytes(buf: bytes, dtype: str, shape) -> torch.Tensor:
    tdt, size = _DTYPES[dtype]
    n = 1
    for d in shape:
        n *= d
    if len(buf) != n * size:
        raise ValueError(f"safetensors: {dtype}{list(shape)} needs {n * size} bytes, header gives {len(buf)}")
    if n == 0:
        return torch.empty(shape, dtype=tdt)
    storage_dt = torch.int16 if tdt == torch.bfloat16 else tdt
    # bytearray: frombuffer wants a writable buffer; clone so the tensor owns its memory.
    t = torch.frombuffer(bytearray(buf), dtype=storage_dt).clone().reshape(shape)
    return t.view(torch.bfloat16) if tdt == torch.bfloat16 else t


# ----------------------------------------------------------------------------
# writing

def save_file(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Write {name: torch.Tensor} (+ optional {str: str} metadata) to `path`.

    Tensors are laid out by decreasing element size, then by name, so every tensor starts at an
    offset that is a multiple of its own element size (the order the reference writer uses too).
    The output is a pure function of the inputs: the same tensors give the same bytes."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"safetensors: __metadata__ must map str to str, found {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(sorted(metadata.items()))
    items = []
    for name, t in tensors.items():
        if name == "__metadata__":
            raise ValueError("safetensors: '__metadata__' is reserved and cannot name a tensor")
        if t.dtype not in _NAMES:
            raise TypeError(f"safetensors: tensor {name!r} has unsupported dtype {t.dtype}")
        items.append((-_NAMES[t.dtype][1], name, t))
    items.sort(key=lambda x: (x[0], x[1]))
    blobs, offset = [], 0
    for _, name, t in items:
        b = _to_bytes(t)
        header[name] = {"dtype": _NAMES[t.dtype][0], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-(8 + len(hjson))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------
# reading

def load_file_with_metadata(path: str):
    """Return ({name: torch.Tensor}, {str: str} metadata). Checks the invariants the C++ reader
    should also check: header length in range, known dtypes, offsets that tile the buffer exactly."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"safetensors: {path}: file is {len(raw)} bytes, shorter than the 8-byte length")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"safetensors: {path}: header length {n} runs past the end of the {len(raw)}-byte file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    spans, out = [], {}
    for name, info in header.items():
        dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise ValueError(f"safetensors: {path}: tensor {name!r} has unsupported dtype {dtype}")
        if not (0 <= b <= e <= len(data)):
            raise ValueError(f"safetensors: {path}: tensor {name!r} offsets [{b}, {e}) outside the {len(data)}-byte buffer")
        out[name] = _from_bytes(data[b:e], dtype, shape)
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise ValueError(f"safetensors: {path}: tensor {name!r} starts at {b}, expected {pos} (hole or overlap)")
        pos = e
    if pos != len(data):
        raise ValueError(f"safetensors: {path}: tensors cover {pos} bytes of a {len(data)}-byte buffer")
    return out, meta


def load_file(path: str) -> dict:
    return load_file_with_metadata(path)[0]


if __name__ == "__main__":
    # `safetensors_io.py FILE`: list the tensors of a file (a quick look at a golden or a checkpoint).
    tensors, meta = load_file_with_metadata(sys.argv[1])
    for k, v in meta.items():
        print(f"__metadata__[{k}] = {v[:200]}{'...' if len(v) > 200 else ''}")
    for name, t in tensors.items():
        print(f"{name:60s} {_NAMES[t.dtype][0]:5s} {list(t.shape)}")
