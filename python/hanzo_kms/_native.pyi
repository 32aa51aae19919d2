"""Type stubs of the Rust extension (``python/src/lib.rs``)."""

from os import PathLike
from typing import List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

def default_threads() -> int:
    """The number of worker threads used by default: the available cores."""

class EncryptedFile:
    """A model file whose header has been read and parsed. Nothing is decrypted yet."""

    @staticmethod
    def open(path: Union[str, PathLike[str]]) -> EncryptedFile:
        """Open ``path`` and parse its header."""
    @property
    def header(self) -> bytes:
        """The header's bytes, as the server's ``unwrap`` call takes them."""
    @property
    def key_name(self) -> str: ...
    @property
    def key_version(self) -> int: ...
    @property
    def model_id(self) -> str: ...
    @property
    def metadata(self) -> bytes: ...
    @property
    def segment_size(self) -> int: ...
    def unlock(
        self, answer: bytearray, model_id: Optional[str] = None, threads: Optional[int] = None
    ) -> PlainView:
        """Unlock with the server's ``unwrap`` answer (zeroed once read); authenticates the
        final segment. Every failure is ``AuthenticationFailed``."""

class PlainView:
    """The plaintext of an unlocked model file, read by byte range."""

    def __len__(self) -> int: ...
    @property
    def segment_size(self) -> int: ...
    @property
    def segments(self) -> int: ...
    @property
    def segments_decrypted(self) -> int:
        """Segments decrypted so far (the final one, at unlock, included)."""
    def read(self, start: int, end: int) -> npt.NDArray[np.uint8]:
        """Decrypt plaintext bytes ``[start, end)`` into a new NumPy ``uint8`` array, only the
        covering segments, on all cores, GIL released."""
    def safetensors_index(
        self,
    ) -> Tuple[List[Tuple[str, str, List[int], int, int]], Optional[str]]:
        """``([(name, dtype, shape, start, end)], metadata_json)``, absolute plaintext offsets."""

class SealingWriter:
    """A new model file being written; nothing appears at ``path`` until ``finish``."""

    def __init__(
        self, path: Union[str, PathLike[str]], answer: bytearray, threads: Optional[int] = None
    ) -> None: ...
    def write(self, data: Union[bytes, bytearray, memoryview]) -> None: ...
    def finish(self) -> int:
        """Seal the rest, sync, rename into place; returns the plaintext length."""
    def abort(self) -> None:
        """Remove the temporary file."""
