"""Encrypted ``.safetensors`` files, shaped like the ``safetensors`` package's API.

Swapping it in is a one-line change::

    # from safetensors import safe_open
    from hanzo_kms.safetensors import safe_open

    with safe_open("model.hkms", framework="pt", model="acme:gpt4", client=kms) as f:
        for name in f.keys():
            state_dict[name] = f.get_tensor(name)

Opening a file sends only its header to the server (``POST /v1/models/{key}/unwrap``), which
authorises the decryption for the token's decrypt role and records it in the audit log. The data
key comes back into the Rust extension, never into Python. Each tensor is then decrypted from
the segments that hold it, on all cores with the GIL released, into memory: no plaintext file is
written anywhere. Every refusal (wrong model, a token without the decrypt role, a revoked or
foreign token, a tampered or truncated file) raises a :class:`hanzo_kms.errors.KmsError` and
releases no tensor.

Tensors come out with the file's dtype and shape. NumPy has no bfloat16 or float8 of its own:
those come out as the ``ml_dtypes`` types (``pip install ml_dtypes``, the package JAX uses), and
PyTorch has them natively. The packed 4-bit type ``F4`` loads with ``framework="pt"`` only
(``torch.float4_e2m1fn_x2``, two values per byte).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import errors
from .client import Client, PathLike

__all__ = ["safe_open", "load_file", "save_file", "DTYPE_BITS"]

#: Bits per element of each safetensors dtype.
DTYPE_BITS: Dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

# The safetensors package writes tensors in descending order of this list, then by name: the
# same order makes our files' plaintext byte-identical to its own.
_ORDER = list(DTYPE_BITS)

_NUMPY = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "C64": "complex64",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
}
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}
_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "C64": "complex64",
    "F64": "float64",
    "I64": "int64",
    "U64": "uint64",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F4": "float4_e2m1fn_x2",
}


class _Tensor:
    __slots__ = ("name", "dtype", "shape", "start", "end")

    def __init__(self, name: str, dtype: str, shape: List[int], start: int, end: int) -> None:
        self.name, self.dtype, self.shape, self.start, self.end = name, dtype, shape, start, end


class safe_open:
    """An encrypted safetensors file, opened lazily: only the header is decrypted at open.

    Args:
        filename: the encrypted file (``hanzo-kms model encrypt`` or :func:`save_file` wrote it).
        framework: ``"np"`` (or ``"numpy"``) for NumPy arrays, ``"pt"`` (or ``"torch"``) for
            PyTorch tensors.
        device: PyTorch only: where to put tensors (``"cpu"`` by default).
        model: the model the file was made for: ``customer:model`` or ``model:customer:model``.
            A file made for another model is refused (``AuthenticationFailed``).
        client: the :class:`~hanzo_kms.Client` that unwraps the data key. Default: a client
            from the environment (``HANZO_KMS_URL``, ``HANZO_KMS_TOKEN`` or
            ``HANZO_KMS_TOKEN_FILE``).
        data_dir: offline use instead of ``client``: unwrap through a ``hanzo-kms serve``
            started on this data directory for the duration of the open (see
            :meth:`Client.local`).
        threads: worker threads for decryption (default: all cores).
    """

    def __init__(
        self,
        filename: PathLike,
        framework: str,
        device: Any = "cpu",
        *,
        model: str,
        client: Optional[Client] = None,
        data_dir: Optional[PathLike] = None,
        threads: Optional[int] = None,
    ) -> None:
        self._framework = _framework(framework)
        self._device = device
        if client is not None and data_dir is not None:
            raise errors.InvalidArgument("give client or data_dir, not both")
        if data_dir is not None:
            with Client.local(data_dir, threads=threads) as local:
                self._view = local.open_model_file(model, filename, threads=threads)
        else:
            self._view = (client or Client()).open_model_file(model, filename, threads=threads)
        tensors, meta = self._view.safetensors_index()
        self._tensors: Dict[str, _Tensor] = {}
        for name, dtype, shape, start, end in tensors:
            bits = DTYPE_BITS.get(dtype)
            if bits is None:
                raise errors.InvalidArgument(f"not a safetensors file: tensor {name!r}: unknown dtype {dtype}")
            want = math.prod(shape) * bits
            if want % 8 or want // 8 != end - start:
                raise errors.InvalidArgument(
                    f"not a safetensors file: tensor {name!r}: {dtype} {shape} is not {end - start} bytes"
                )
            self._tensors[name] = _Tensor(name, dtype, list(shape), start, end)
        self._metadata = json.loads(meta) if meta is not None else None

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._view = None

    def keys(self) -> List[str]:
        """The tensor names, sorted."""
        return sorted(self._tensors)

    def offset_keys(self) -> List[str]:
        """The tensor names in the order of their data in the file."""
        return [t.name for t in sorted(self._tensors.values(), key=lambda t: (t.start, t.name))]

    def metadata(self) -> Optional[Dict[str, str]]:
        """The safetensors header's ``__metadata__`` (free-form text), or None."""
        return self._metadata

    def get_tensor(self, name: str) -> Any:
        """One tensor, decrypting only the segments that hold it."""
        t = self._tensor(name)
        data = self._plain().read(t.start, t.end)
        return _make(self._framework, t.dtype, t.shape, data, 0, self._device)

    def get_slice(self, name: str) -> "_Slice":
        """A lazy view of one tensor: ``get_shape()``, ``get_dtype()``, and indexing
        (``f.get_slice("w")[0:1024]``, ``[:, ::2]``), which decrypts only the rows the first
        index selects."""
        return _Slice(self, self._tensor(name))

    def get_tensors(self) -> Dict[str, Any]:
        """Every tensor, in one pass over the file (each segment decrypted once). The tensors
        share one buffer, freed when the last of them is."""
        return _all(self._plain(), self._tensors.values(), self._framework, self._device)

    @property
    def segments_decrypted(self) -> int:
        """Segments decrypted since the open (the final segment, checked at open, included)."""
        return self._plain().segments_decrypted

    @property
    def segments(self) -> int:
        """Segments in the file."""
        return self._plain().segments

    def _plain(self) -> Any:
        if self._view is None:
            raise errors.InvalidArgument("the file is closed")
        return self._view

    def _tensor(self, name: str) -> _Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise errors.NotFound(f"no tensor {name!r} in the file") from None


class _Slice:
    """A tensor not yet read; indexing reads only the rows its first index selects."""

    def __init__(self, f: safe_open, t: _Tensor) -> None:
        self._f, self._t = f, t

    def get_shape(self) -> List[int]:
        return list(self._t.shape)

    def get_dtype(self) -> str:
        return self._t.dtype

    def __len__(self) -> int:
        if not self._t.shape:
            raise TypeError("len() of a 0-d tensor")
        return self._t.shape[0]

    def __getitem__(self, index: Any) -> Any:
        t, f = self._t, self._f
        idx = index if isinstance(index, tuple) else (index,)
        first = idx[0] if idx else slice(None)
        shape = t.shape
        bits = DTYPE_BITS[t.dtype]
        row_bits = math.prod(shape[1:]) * bits if shape else 0
        if not shape or row_bits % 8 or not isinstance(first, (int, slice)) or isinstance(first, bool):
            # Whole-tensor cases: 0-d, sub-byte rows, Ellipsis, arrays, None.
            return f.get_tensor(t.name)[index]
        n = shape[0]
        if isinstance(first, int):
            i = first + n if first < 0 else first
            if not 0 <= i < n:
                raise IndexError(f"index {first} is out of bounds for dimension 0 with size {n}")
            lo, hi, local = i, i + 1, 0
        else:
            start, stop, step = first.indices(n)
            if step > 0:
                lo, hi = start, max(start, stop)
                local = slice(0, hi - lo, step)
            else:
                lo, hi = stop + 1, start + 1
                if hi <= lo:
                    lo = hi = 0
                local = slice(start - lo, (stop - lo) if stop - lo >= 0 else None, step)
        row = row_bits // 8
        data = f._plain().read(t.start + lo * row, t.start + hi * row)
        arr = _make(f._framework, t.dtype, [hi - lo] + shape[1:], data, 0, f._device)
        return arr[(local,) + tuple(idx[1:])]


def load_file(
    filename: PathLike,
    framework: str = "np",
    device: Any = "cpu",
    *,
    model: str,
    client: Optional[Client] = None,
    data_dir: Optional[PathLike] = None,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Every tensor of an encrypted safetensors file, as ``{name: array}`` (NumPy by default,
    PyTorch with ``framework="pt"``), like ``safetensors.numpy.load_file`` on the plaintext.
    The file is decrypted in one pass on all cores straight into the tensors' memory."""
    with safe_open(
        filename, framework, device, model=model, client=client, data_dir=data_dir, threads=threads
    ) as f:
        return f.get_tensors()


def save_file(
    tensors: Mapping[str, Any],
    filename: PathLike,
    metadata: Optional[Mapping[str, str]] = None,
    *,
    model: str,
    client: Optional[Client] = None,
    data_dir: Optional[PathLike] = None,
    segment_size: Optional[int] = None,
    header_metadata: Union[str, bytes] = b"",
) -> None:
    """Write NumPy arrays or PyTorch tensors to an encrypted safetensors file, straight into
    our format: the plaintext is the byte-for-byte file ``safetensors`` would write, and it is
    sealed in memory as it is produced. Nothing appears at ``filename`` until the whole file is
    written and synced (a temporary file of ciphertext beside it is renamed into place); no
    plaintext file is written anywhere. The server draws the data key
    (``POST /v1/models/{key}/datakey``, encrypt role, audited).

    ``segment_size`` (a power of two, 4 KiB … 64 MiB; default 1 MiB) and ``header_metadata``
    (free-form, authenticated but not encrypted, shown by ``hanzo-kms model inspect``) are as
    for ``hanzo-kms model encrypt --segment-size/--metadata``."""
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise errors.InvalidArgument("metadata must map str to str")
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise errors.InvalidArgument(f"tensor names must be str, not {type(name).__name__}")
        dtype, shape, buf = _raw(name, value)
        entries.append((name, dtype, shape, buf))
    entries.sort(key=lambda e: (-_ORDER.index(e[1]), e[0]))
    header: Dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape, buf in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + buf.nbytes]}
        offset += buf.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)

    def write(kms: Client) -> None:
        w = kms._sealing_writer(model, filename, header_metadata, segment_size)
        try:
            w.write(len(text).to_bytes(8, "little") + text)
            for _, _, _, buf in entries:
                for i in range(0, buf.nbytes, _CHUNK):
                    w.write(buf[i : i + _CHUNK])
            w.finish()
        except BaseException:
            w.abort()
            raise

    if client is not None and data_dir is not None:
        raise errors.InvalidArgument("give client or data_dir, not both")
    if data_dir is not None:
        with Client.local(data_dir) as local:
            write(local)
    else:
        write(client or Client())


# ---- helpers -------------------------------------------------------------------------------

#: Plaintext handed to the sealer per call while saving (bounds the copy held at once).
_CHUNK = 64 << 20


def _framework(name: str) -> str:
    if name in ("np", "numpy"):
        return "np"
    if name in ("pt", "torch"):
        return "pt"
    raise errors.InvalidArgument(f"framework {name!r}: expected 'np' (NumPy) or 'pt' (PyTorch)")


def _np_dtype(code: str) -> Any:
    import numpy as np

    if code in _NUMPY:
        return np.dtype(_NUMPY[code]).newbyteorder("<")
    if code in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise errors.Unsupported(
                f"NumPy has no {code}: install ml_dtypes (pip install ml_dtypes), "
                "or load with framework='pt'"
            ) from None
        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[code]))
    raise errors.Unsupported(f"NumPy has no packed {code} type: load it with framework='pt'")


def _torch_dtype(code: str) -> Any:
    import torch

    d = getattr(torch, _TORCH.get(code, ""), None)
    if d is None:
        raise errors.Unsupported(f"this PyTorch ({torch.__version__}) has no {code} type")
    return d


def _make(framework: str, code: str, shape: List[int], data: Any, offset: int, device: Any) -> Any:
    """A tensor over ``data[offset:]`` (no copy)."""
    nbytes = math.prod(shape) * DTYPE_BITS[code] // 8
    if framework == "np":
        import numpy as np

        dt = _np_dtype(code)
        return np.frombuffer(data, dtype=dt, count=math.prod(shape), offset=offset).reshape(shape)
    import torch

    dt = _torch_dtype(code)
    tshape = list(shape)
    if code == "F4":
        # Two values per byte: the storage shape halves the last dimension.
        tshape[-1] //= 2
    if nbytes == 0:
        out = torch.empty(tshape, dtype=dt)
    else:
        raw = torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=offset)
        try:
            out = raw.view(dt).reshape(tshape)
        except RuntimeError:
            # A tensor whose offset is not a multiple of its element size: copy it aligned.
            out = raw.clone().view(dt).reshape(tshape)
    if device not in (None, "cpu"):
        out = out.to(device)
    return out


def _all(view: Any, tensors: Iterable[_Tensor], framework: str, device: Any) -> Dict[str, Any]:
    tensors = list(tensors)
    if not tensors:
        return {}
    lo = min(t.start for t in tensors)
    hi = max(t.end for t in tensors)
    data = view.read(lo, hi)
    return {t.name: _make(framework, t.dtype, t.shape, data, t.start - lo, device) for t in tensors}


def _raw(name: str, value: Any) -> Tuple[str, List[int], memoryview]:
    """(safetensors dtype, shape, bytes as a flat memoryview) of a NumPy array or torch tensor."""
    mod = type(value).__module__.split(".")[0]
    if mod == "torch":
        import torch

        t = value.detach().to("cpu").contiguous()
        names = {v: k for k, v in _TORCH.items()}
        code = None
        for tname, c in names.items():
            if getattr(torch, tname, None) == t.dtype:
                code = c
        if code is None:
            raise errors.InvalidArgument(f"tensor {name!r}: dtype {t.dtype} has no safetensors type")
        shape = list(t.shape)
        if code == "F4":
            shape[-1] *= 2
        flat = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else bytearray()
        return code, shape, memoryview(flat).cast("B") if t.numel() else memoryview(b"")
    import numpy as np

    a = np.asarray(value)
    code = None
    for c, n in list(_NUMPY.items()) + list(_ML_DTYPES.items()):
        if a.dtype.name == n:
            code = c
            break
    if code is None:
        raise errors.InvalidArgument(f"tensor {name!r}: dtype {a.dtype} has no safetensors type")
    if a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    shape = list(a.shape)  # before the copy below: np.ascontiguousarray makes 0-d arrays 1-d
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    return code, shape, memoryview(a.reshape(-1).view(np.uint8))
