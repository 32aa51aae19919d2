"""The PyTorch path, where torch imports (CI has no CPU build of torch on the registry it reaches,
so there these tests are skipped and the NumPy path carries the suite)."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors

torch = pytest.importorskip("torch")

from hanzo_kms.safetensors import load_file, safe_open, save_file  # noqa: E402

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64]
for name in ["uint16", "uint32", "uint64", "float8_e5m2", "float8_e4m3fn", "float8_e8m0fnu",
             "float8_e4m3fnuz", "float8_e5m2fnuz"]:
    if hasattr(torch, name):
        DTYPES.append(getattr(torch, name))


def make(dtype, shape):
    raw = torch.randint(0, 256, (int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size(),),
                        dtype=torch.uint8)
    return raw.view(dtype).reshape(shape) if raw.numel() else torch.empty(shape, dtype=dtype)


def test_pt_round_trip_every_dtype(server, loader, tmp_path):
    import safetensors.torch

    tensors = {f"{str(d).split('.')[-1]}.{k}": make(d, s)
               for d in DTYPES for k, s in enumerate([(), (0,), (5,), (4, 3)])}
    plain, enc = tmp_path / "t.safetensors", tmp_path / "t.hkms"
    safetensors.torch.save_file(tensors, str(plain))
    server.cli("model", "encrypt", "--model", "acme:gpt4", "--in", str(plain), "--out", str(enc),
               "--segment-size", "4096")
    ref = safetensors.torch.load_file(str(plain))
    ours = load_file(enc, framework="pt", model="acme:gpt4", client=loader)
    for k, v in ref.items():
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape, k
        assert ours[k].reshape(-1).view(torch.uint8).tolist() == v.reshape(-1).view(torch.uint8).tolist(), k
    with safe_open(enc, framework="pt", model="acme:gpt4", client=loader) as f:
        w = f.get_slice("float32.3")[1:3]
        assert torch.equal(w, ref["float32.3"][1:3])
    enc2, out = tmp_path / "s.hkms", tmp_path / "s.safetensors"
    save_file(tensors, enc2, model="acme:gpt4", client=loader)
    server.cli("model", "decrypt", "--model", "acme:gpt4", "--in", str(enc2), "--out", str(out))
    assert out.read_bytes() == safetensors.torch.save(tensors)


def test_pt_f4(server, loader, tmp_path):
    if not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.skip("this torch has no float4_e2m1fn_x2")
    buf = np.arange(12, dtype=np.uint8)
    spec = {"f4": safetensors.TensorSpec(dtype="float4_e2m1fn_x2", shape=[3, 4],
                                         data_ptr=buf.ctypes.data, data_len=12)}
    plain, enc = tmp_path / "f4.safetensors", tmp_path / "f4.hkms"
    safetensors.serialize_file(spec, str(plain))
    server.cli("model", "encrypt", "--model", "acme:gpt4", "--in", str(plain), "--out", str(enc))
    t = load_file(enc, framework="pt", model="acme:gpt4", client=loader)["f4"]
    assert t.dtype == torch.float4_e2m1fn_x2 and list(t.shape) == [3, 4]
    assert t.view(torch.uint8).reshape(-1).tolist() == list(range(12))
