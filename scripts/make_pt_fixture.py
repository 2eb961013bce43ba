#!/usr/bin/env python3
"""Write PyTorch `.pt`/`.pth` state-dict fixtures from the reference safetensors weights, with the Python
standard library only (PyTorch is not installable on the build machine).

The output follows `torch.save`'s zip format (PyTorch >= 1.6, `_use_new_zipfile_serialization=True`):
a stored (uncompressed) zip whose entries live under `<stem>/`: `data.pkl` (pickle protocol 2 of the object,
tensors as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`, storages
as persistent ids `('storage', torch.FloatStorage, '<key>', 'cpu', numel)`), `byteorder` (`little`),
`data/<key>` (raw little-endian storage bytes), `version` (`3`).

Usage (from the repository root):
    python3 scripts/make_pt_fixture.py

writes
  tests/fixtures/reference/logonet_tiny.weights.pt   {"epoch": 7, "best_acc": 0.5, "state_dict": {...}}
      with every key prefixed by `module.`, as the reference trainer saves a DDP model;
  tests/fixtures/reference/lka.weights.pth           a plain state dict (OrderedDict of tensors).
"""

import collections
import io
import json
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

# Stand-ins for the globals torch pickles reference; pickle finds them by module and name.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
    raise RuntimeError("stand-in")


_rebuild_tensor_v2.__module__ = "torch._utils"
_rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch._utils = torch_utils

STORAGE = {"F32": ("FloatStorage", 4), "I64": ("LongStorage", 8), "F64": ("DoubleStorage", 8)}
for name, _ in STORAGE.values():
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils


class Storage:
    def __init__(self, key, dtype, data):
        self.key, self.dtype, self.data = key, dtype, data

    def numel(self):
        return len(self.data) // STORAGE[self.dtype][1]


class FakeTensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, tuple(shape)

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.append(acc)
            acc *= d
        stride = tuple(reversed(stride))
        return (
            _rebuild_tensor_v2,
            (self.storage, 0, self.shape, stride, False, collections.OrderedDict()),
        )


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            cls = getattr(torch, STORAGE[obj.dtype][0])
            return ("storage", cls, obj.key, "cpu", obj.numel())
        return None


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    out = collections.OrderedDict()
    for key in sorted(k for k in header if k != "__metadata__"):
        h = header[key]
        a, b = h["data_offsets"]
        out[key] = (h["dtype"], h["shape"], body[a:b])
    return out


def write_pt(path, obj_builder, tensors):
    storages = []

    def tensor(dtype, shape, data):
        s = Storage(str(len(storages)), dtype, data)
        storages.append(s)
        return FakeTensor(s, shape)

    obj = obj_builder({k: tensor(*v) for k, v in tensors.items()})
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    stem = Path(path).name.split(".")[0]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", buf.getvalue())
        z.writestr(f"{stem}/byteorder", "little")
        for s in storages:
            z.writestr(f"{stem}/data/{s.key}", s.data)
        z.writestr(f"{stem}/version", "3\n")
    print(f"wrote {path}: {len(storages)} tensors")


def main():
    root = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference"

    def wrapped(t):
        sd = collections.OrderedDict(("module." + k, v) for k, v in t.items())
        return {"epoch": 7, "best_acc": 0.5, "state_dict": sd}

    write_pt(root / "logonet_tiny.weights.pt", wrapped, read_safetensors(root / "logonet_tiny.weights.safetensors"))
    write_pt(root / "lka.weights.pth", collections.OrderedDict, read_safetensors(root / "lka.weights.safetensors"))


if __name__ == "__main__":
    main()
