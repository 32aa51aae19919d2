"""Round trips against the real `safetensors` package and the real CLI."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy

import hanzo_kms
from hanzo_kms.safetensors import load_file, safe_open, save_file

NATIVE = ["bool", "uint8", "int8", "int16", "uint16", "float16", "int32", "uint32", "float32",
          "complex64", "float64", "int64", "uint64"]
# safetensors dtype code -> the ml_dtypes type our NumPy path returns.
ML = {"BF16": ml_dtypes.bfloat16, "F8_E5M2": ml_dtypes.float8_e5m2, "F8_E4M3": ml_dtypes.float8_e4m3fn,
      "F8_E8M0": ml_dtypes.float8_e8m0fnu, "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
      "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz}
SHAPES = [(), (0,), (7,), (3, 5), (33, 17, 3)]


def native_tensors(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for dt in NATIVE:
        for k, shape in enumerate(SHAPES):
            n = int(np.prod(shape))
            raw = rng.integers(0, 256, size=n * np.dtype(dt).itemsize, dtype=np.uint8)
            a = raw.view(dt).reshape(shape) if dt != "bool" else (raw % 2).astype(bool).reshape(shape)
            out[f"{dt}.{k}"] = a
    return out


def encrypt_cli(server, plain: Path, enc: Path, model: str = "acme:gpt4", segment: int = 4096) -> None:
    server.cli("model", "encrypt", "--model", model, "--in", str(plain), "--out", str(enc),
               "--segment-size", str(segment))


def test_native_dtypes_equal_safetensors_numpy(server, loader, tmp_path):
    tensors = native_tensors()
    plain, enc = tmp_path / "m.safetensors", tmp_path / "m.hkms"
    safetensors.numpy.save_file(tensors, str(plain), metadata={"format": "np", "note": "é"})
    encrypt_cli(server, plain, enc)
    ref = safetensors.numpy.load_file(str(plain))
    ours = load_file(enc, model="acme:gpt4", client=loader)
    assert sorted(ours) == sorted(ref)
    for name, want in ref.items():
        got = ours[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name
    with safe_open(enc, framework="np", model="acme:gpt4", client=loader) as f, \
            safetensors.safe_open(str(plain), framework="np") as g:
        assert f.keys() == list(g.keys())
        assert f.offset_keys() == list(g.offset_keys())
        assert f.metadata() == g.metadata() == {"format": "np", "note": "é"}
        for name in f.keys():
            assert f.get_tensor(name).tobytes() == g.get_tensor(name).tobytes()


def test_ml_dtypes_and_f4(server, loader, tmp_path):
    """BF16, every F8 and F4, written by safetensors' own serializer; compared byte for byte
    with safetensors.deserialize of the plaintext, with the right NumPy (ml_dtypes) dtype."""
    rng = np.random.default_rng(2)
    keep, specs = [], {}
    names = {"BF16": "bfloat16", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
             "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz",
             "F8_E5M2FNUZ": "float8_e5m2fnuz"}
    for code, tname in names.items():
        for k, shape in enumerate(SHAPES):
            n = int(np.prod(shape)) * np.dtype(ML[code]).itemsize
            buf = rng.integers(0, 256, size=max(n, 1), dtype=np.uint8)
            keep.append(buf)
            specs[f"{code}.{k}"] = safetensors.TensorSpec(dtype=tname, shape=list(shape),
                                                          data_ptr=buf.ctypes.data, data_len=n)
    f4 = rng.integers(0, 256, size=12, dtype=np.uint8)
    keep.append(f4)
    # Logical shape [3, 8]: 24 four-bit values in 12 bytes (storage shape [3, 4]).
    specs["F4.0"] = safetensors.TensorSpec(dtype="float4_e2m1fn_x2", shape=[3, 4],
                                           data_ptr=f4.ctypes.data, data_len=12)
    plain, enc = tmp_path / "ml.safetensors", tmp_path / "ml.hkms"
    safetensors.serialize_file(specs, str(plain), metadata=None)
    encrypt_cli(server, plain, enc)
    ref = dict(safetensors.deserialize(plain.read_bytes()))
    with safe_open(enc, framework="np", model="acme:gpt4", client=loader) as f:
        assert f.metadata() is None
        assert sorted(f.keys()) == sorted(ref)
        for name, info in ref.items():
            code = name.split(".")[0]
            if code == "F4":
                with pytest.raises(hanzo_kms.Unsupported, match="framework='pt'"):
                    f.get_tensor(name)
                assert f.get_slice(name).get_shape() == info["shape"] == [3, 8]
                continue
            got = f.get_tensor(name)
            assert got.dtype == np.dtype(ML[code]), name
            assert list(got.shape) == info["shape"], name
            assert got.tobytes() == bytes(info["data"]), name


def test_get_slice_matches_numpy(server, loader, tmp_path):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((300, 70)).astype(np.float32)
    v = rng.integers(-9, 9, size=(11,), dtype=np.int64)
    s = np.float64(3.5)
    plain, enc = tmp_path / "s.safetensors", tmp_path / "s.hkms"
    safetensors.numpy.save_file({"w": w, "v": v, "s": np.array(s)}, str(plain))
    encrypt_cli(server, plain, enc)
    with safe_open(enc, framework="np", model="acme:gpt4", client=loader) as f:
        sl = f.get_slice("w")
        assert sl.get_shape() == [300, 70] and sl.get_dtype() == "F32" and len(sl) == 300
        for idx in [np.s_[10:20], np.s_[:, 5:9], np.s_[7], np.s_[-1], np.s_[::7, ::3],
                    np.s_[250:], np.s_[5:5], np.s_[299:100:-3], np.s_[..., 3], np.s_[3, 4],
                    np.s_[-300:-290, -1]]:
            np.testing.assert_array_equal(sl[idx], w[idx], err_msg=str(idx))
        np.testing.assert_array_equal(f.get_slice("v")[2:5], v[2:5])
        assert f.get_slice("s")[()] == s
        with pytest.raises(IndexError):
            sl[300]
        with pytest.raises(hanzo_kms.NotFound):
            f.get_slice("nope")


def test_save_file_decrypts_with_cli_to_safetensors_bytes(server, loader, tmp_path):
    tensors = native_tensors(4)
    tensors["bf16"] = np.arange(12, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(3, 4)
    tensors["f8"] = np.linspace(-2, 2, 9, dtype=np.float32).astype(ml_dtypes.float8_e4m3fn)
    tensors["big"] = np.random.default_rng(5).standard_normal((3000, 500)).astype(np.float32)  # 6 MB
    tensors["naïve"] = np.arange(5, dtype=np.int16)
    # One key: safetensors writes __metadata__ from a hash map, in no fixed order.
    meta = {"format": "pt"}
    enc, out = tmp_path / "saved.hkms", tmp_path / "saved.safetensors"
    save_file(tensors, enc, metadata=meta, model="acme:gpt4", client=loader, segment_size=65536)
    assert [p.name for p in tmp_path.iterdir()] == ["saved.hkms"]
    assert enc.read_bytes()[:6] == b"HZKMSW"
    server.cli("model", "decrypt", "--model", "acme:gpt4", "--in", str(enc), "--out", str(out))
    assert out.read_bytes() == safetensors.numpy.save(tensors, metadata=meta)
    back = load_file(enc, model="acme:gpt4", client=loader)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].tobytes() == v.tobytes(), k
    meta = {"format": "pt", "k": "v", "z": "é"}
    save_file(tensors, enc, metadata=meta, model="acme:gpt4", client=loader)
    out.unlink()
    server.cli("model", "decrypt", "--model", "acme:gpt4", "--in", str(enc), "--out", str(out))
    with safetensors.safe_open(str(out), framework="np") as g:
        assert g.metadata() == meta
    raw = dict(safetensors.deserialize(out.read_bytes()))
    assert all(bytes(raw[k]["data"]) == v.tobytes() for k, v in tensors.items())


def test_save_file_empty_and_tiny(server, loader, tmp_path):
    for tensors in ({}, {"x": np.zeros((0,), np.float32)}, {"x": np.ones((1,), np.uint8)}):
        enc, out = tmp_path / "t.hkms", tmp_path / "t.safetensors"
        save_file(tensors, enc, model="acme:gpt4", client=loader)
        server.cli("model", "decrypt", "--model", "acme:gpt4", "--in", str(enc), "--out", str(out))
        assert out.read_bytes() == safetensors.numpy.save(tensors)
        assert load_file(enc, model="acme:gpt4", client=loader).keys() == tensors.keys()
        enc.unlink()
        out.unlink()


def test_save_file_refusal_leaves_nothing(tokens, tmp_path):
    reader_only = tokens.make("acme", ["decrypt"], ["model:acme:*"])
    with pytest.raises(hanzo_kms.PermissionDenied) as e:
        save_file({"x": np.ones(3)}, tmp_path / "x.hkms", model="acme:gpt4", client=reader_only)
    assert e.value.request_id
    with pytest.raises(hanzo_kms.InvalidArgument):
        save_file({"x": np.ones(3)}, tmp_path / "y.hkms", metadata={"a": 1}, model="acme:gpt4",
                  client=reader_only)
    assert list(tmp_path.iterdir()) == []


def test_one_tensor_reads_only_its_segments(server, loader, tmp_path):
    """64 tensors of 64 KiB in 4 KiB segments (1 041 segments): reading one decrypts exactly
    the segments that cover its bytes, counted by the extension."""
    seg = 4096
    tensors = {f"t{i:02d}": np.full(16384, i, np.float32) for i in range(64)}
    plain, enc = tmp_path / "big.safetensors", tmp_path / "big.hkms"
    safetensors.numpy.save_file(tensors, str(plain))
    encrypt_cli(server, plain, enc, segment=seg)
    n = struct.unpack("<Q", plain.read_bytes()[:8])[0]
    header = json.loads(plain.read_bytes()[8:8 + n])
    with safe_open(enc, framework="np", model="acme:gpt4", client=loader) as f:
        total = f.segments
        assert total == -(-plain.stat().st_size // seg)
        # The open: the final segment (authenticates the length) and the header's segments.
        assert f.segments_decrypted == 1 + -(-(8 + n) // seg)
        for name in ["t00", "t31", "t63"]:
            before = f.segments_decrypted
            a = f.get_tensor(name)
            np.testing.assert_array_equal(a, tensors[name])
            b, e = header[name]["data_offsets"]
            start, end = 8 + n + b, 8 + n + e
            covering = (end - 1) // seg - start // seg + 1
            assert f.segments_decrypted - before == covering
            assert covering <= 17 < total // 50
        before = f.segments_decrypted
        np.testing.assert_array_equal(f.get_slice("t10")[100:2000], tensors["t10"][100:2000])
        start = 8 + n + header["t10"]["data_offsets"][0]
        assert f.segments_decrypted - before == (start + 8000 - 1) // seg - (start + 400) // seg + 1


def test_framework_names_and_closed(server, loader, tmp_path):
    plain, enc = tmp_path / "a.safetensors", tmp_path / "a.hkms"
    safetensors.numpy.save_file({"a": np.arange(4)}, str(plain))
    encrypt_cli(server, plain, enc)
    with pytest.raises(hanzo_kms.InvalidArgument, match="framework"):
        safe_open(enc, framework="tf", model="acme:gpt4", client=loader)
    with safe_open(enc, framework="numpy", model="acme:gpt4", client=loader) as f:
        pass
    with pytest.raises(hanzo_kms.InvalidArgument, match="closed"):
        f.get_tensor("a")
    with pytest.raises(hanzo_kms.InvalidArgument, match="not a Hanzo KMS model file"):
        safe_open(plain, framework="np", model="acme:gpt4", client=loader)
