"""The Hanzo KMS client: the HIP-005 API over the server's REST interface.

Results are dicts with the JSON API's field names (``/v1/openapi.json`` on a running server has
every schema). Two exceptions, for convenience: :meth:`Client.decrypt` and
:meth:`Client.unwrap_data_key` return the plaintext as ``bytes``, and
:meth:`Client.generate_data_key` decodes ``plaintext`` to ``bytes``. Errors raise the
:mod:`hanzo_kms.errors` exception for the server's ``error.code``, carrying its ``request_id``.

The transport is Python's own ``http.client`` and ``ssl`` (no dependency): the client only
carries control-plane calls; model weights never cross the network. The two answers that carry a
model file's data key (``/v1/models/{name}/datakey`` and ``/unwrap``) are read into a
``bytearray`` that the Rust extension parses and zeroes, so the data key never becomes a Python
object.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Union

from . import errors

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_URL = "http://127.0.0.1:8200"

#: Calls safe to repeat are retried on ``unavailable``, this many times by default.
DEFAULT_RETRIES = 3


class Client:
    """A connection to a Hanzo KMS server's REST API.

    Args:
        url: the REST address, ``http://host:8200`` (``https://`` for TLS). Default: the
            ``HANZO_KMS_URL`` environment variable, else ``http://127.0.0.1:8200``.
        token: the API token (``hkms_…``). Default: ``HANZO_KMS_TOKEN``.
        token_file: read the token from this file instead (e.g. ``DATA_DIR/admin.token``).
            Default: ``HANZO_KMS_TOKEN_FILE``.
        tls_ca: for ``https://``, trust this CA (PEM file) instead of the system's roots.
        tls_cert, tls_key: a client certificate and its key (PEM files) for a server that
            requires mutual TLS (``server.tls.client_ca_file``).
        timeout: seconds for each attempt of each call (default 30).
        retries: how many times a call that is safe to repeat is retried on ``unavailable``,
            with exponential back-off (default 3). Key creation, rotation and token changes are
            never retried.
        threads: worker threads for the model-file cipher (default: all cores).

    One client may be shared by threads: each thread keeps its own keep-alive connection.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        token_file: Optional[PathLike] = None,
        tls_ca: Optional[PathLike] = None,
        tls_cert: Optional[PathLike] = None,
        tls_key: Optional[PathLike] = None,
        timeout: float = 30.0,
        retries: int = DEFAULT_RETRIES,
        threads: Optional[int] = None,
    ) -> None:
        url = (url or os.environ.get("HANZO_KMS_URL") or DEFAULT_URL).rstrip("/")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise errors.InvalidArgument(
                f"server URL {url!r}: expected http://host:port (TLS: https://host:port)"
            )
        if token is not None and token_file is not None:
            raise errors.InvalidArgument("give token or token_file, not both")
        if token is None and token_file is None:
            token = os.environ.get("HANZO_KMS_TOKEN") or None
            if token is None:
                token_file = os.environ.get("HANZO_KMS_TOKEN_FILE") or None
        if token_file is not None:
            try:
                with open(token_file, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as e:
                raise errors.IoError(f"reading the token file {os.fspath(token_file)}: {e}") from e
        if (tls_cert is None) != (tls_key is None):
            raise errors.InvalidArgument("tls_cert and tls_key go together")
        self.url = url
        self._token = token
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port or (443 if self._https else 80)
        self._base_path = parsed.path.rstrip("/")
        self.timeout = float(timeout)
        self.retries = max(0, int(retries))
        self.threads = threads
        self._ssl: Optional[ssl.SSLContext] = None
        if self._https:
            ctx = ssl.create_default_context(
                cafile=os.fspath(tls_ca) if tls_ca is not None else None
            )
            if tls_cert is not None and tls_key is not None:
                ctx.load_cert_chain(os.fspath(tls_cert), os.fspath(tls_key))
            self._ssl = ctx
        elif tls_ca is not None or tls_cert is not None:
            raise errors.InvalidArgument("TLS options need an https:// server URL")
        self._local = threading.local()
        self._process: Optional[subprocess.Popen] = None
        self._tmpdir: Optional[str] = None
        self._revoke_on_close: Optional[tuple] = None

    @classmethod
    def local(
        cls,
        data_dir: PathLike,
        *,
        token_file: Optional[PathLike] = None,
        binary: Optional[PathLike] = None,
        config: Optional[PathLike] = None,
        threads: Optional[int] = None,
        startup_timeout: float = 30.0,
    ) -> "Client":
        """Offline use: start ``hanzo-kms serve`` on a local data directory, on loopback
        addresses the system picks, and return a client for it (``close()`` stops it; so does
        leaving a ``with`` block).

        Decryption is then authorised and audited by that data directory's service, as with the
        CLI's offline commands. The token defaults to ``DATA_DIR/admin.token`` (written by the
        directory's first ``serve``). ``binary`` defaults to ``hanzo-kms`` on ``PATH`` (or the
        ``HANZO_KMS_BIN`` environment variable).
        """
        exe = binary or os.environ.get("HANZO_KMS_BIN") or shutil.which("hanzo-kms")
        if not exe:
            raise errors.Unavailable(
                "hanzo-kms was not found on PATH: pass binary=, or set HANZO_KMS_BIN"
            )
        tmp = tempfile.mkdtemp(prefix="hanzo-kms-local-")
        out_path = os.path.join(tmp, "serve.out")
        args = [os.fspath(exe), "--data-dir", os.fspath(data_dir), "--json"]
        if config is not None:
            args += ["--config", os.fspath(config)]
        args += ["serve", "--rest-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]
        env = dict(os.environ)
        env.pop("HANZO_KMS_SERVER", None)
        with open(out_path, "wb") as out, open(os.path.join(tmp, "serve.err"), "wb") as err:
            proc = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
            )
        rest = None
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and rest is None:
            if proc.poll() is not None:
                break
            rest = _serve_address(out_path)
            if rest is None:
                time.sleep(0.05)
        if rest is None:
            proc.kill()
            proc.wait()
            with open(os.path.join(tmp, "serve.err"), "rb") as f:
                why = f.read().decode("utf-8", "replace").strip()[-2000:]
            shutil.rmtree(tmp, ignore_errors=True)
            raise errors.Unavailable(f"hanzo-kms serve on {os.fspath(data_dir)} did not start: {why}")
        minted = None
        if token_file is None:
            token_file = os.path.join(os.fspath(data_dir), "admin.token")
            if not os.path.exists(token_file):
                # A directory made by `init` has no admin token: mint an encrypt+decrypt token
                # offline (as the directory's operator may) and revoke it on close.
                token_file = None
                minted = _cli_json(exe, data_dir, config, "tokens", "create", "--tenant", "*",
                                   "--role", "encrypt", "--role", "decrypt", "--description",
                                   "hanzo_kms.Client.local (revoked on close)")
        try:
            if minted is not None:
                client = cls(rest, minted["token"], threads=threads)
            else:
                client = cls(rest, token_file=token_file, threads=threads)
        except BaseException:
            proc.terminate()
            proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if minted is not None:
            client._revoke_on_close = (exe, data_dir, config, minted["id"])
        client._process = proc
        client._tmpdir = tmp
        return client

    # ---- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close this thread's connection; stop the server that :meth:`local` started."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._revoke_on_close is not None:
            exe, data_dir, config, token_id = self._revoke_on_close
            self._revoke_on_close = None
            _cli_json(exe, data_dir, config, "tokens", "revoke", token_id)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ---- HIP-005 API -----------------------------------------------------------------------

    def create_model_keyspace(
        self, customer: str, model: str, *, signing_keys: bool = True
    ) -> List[Dict[str, Any]]:
        """CreateModelKeyspace: the key ``model:customer:model`` and (by default) its
        ``poai:`` and ``hmm:`` signing keys. Returns the keys created (KeyInfo objects)."""
        v = self._call(
            "POST",
            "/v1/keyspaces",
            {"customer": customer, "model": model, "signing_keys": signing_keys},
            retry=False,
        )
        return _list(v, "keys")

    def encrypt_model_weights(
        self,
        model: str,
        weights: Union[bytes, bytearray, memoryview],
        metadata: Union[bytes, str] = b"",
        *,
        segment_size: Optional[int] = None,
    ) -> bytes:
        """EncryptModelWeights for weights in memory: returns the whole model file (header and
        segments), byte-compatible with ``hanzo-kms model encrypt``. Only the data key is
        wrapped by the server; the weights are encrypted here, on all cores. ``model`` is
        ``customer:model`` or a full key name ``model:customer:model``; ``metadata`` is bound
        into the header and authenticated."""
        fd, tmp = tempfile.mkstemp(prefix=".hkms-", suffix=".enc")
        os.close(fd)
        os.unlink(tmp)
        w = self._sealing_writer(model, tmp, metadata, segment_size)
        try:
            w.write(weights)
            w.finish()
        except BaseException:
            w.abort()
            raise
        try:
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            os.unlink(tmp)

    def decrypt_model_weights(self, model: str, file: Union[bytes, bytearray, PathLike]) -> "Any":
        """DecryptModelWeights: the plaintext of a model file, given as its bytes or its path,
        as a NumPy ``uint8`` array (``bytes(a)`` copies it out; ``memoryview(a)`` does not).
        Only the header goes to the server. Wrong model, tampering or truncation raise
        :class:`~hanzo_kms.errors.AuthenticationFailed` and release nothing."""
        if isinstance(file, (bytes, bytearray)):
            fd, tmp = tempfile.mkstemp(prefix=".hkms-", suffix=".enc")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(file)
                view = self.open_model_file(model, tmp)
            finally:
                os.unlink(tmp)
        else:
            view = self.open_model_file(model, file)
        return view.read(0, len(view))

    def sign_poai(self, key: str, attestation: Dict[str, Any]) -> Dict[str, Any]:
        """SignPoAI: sign a PoAI attestation (``model_id``, ``input_hash``, ``output_hash``,
        ``timestamp``, ``compute_time_ms``, ``node_id``) with a ``poai:`` key. A missing
        ``nonce`` is filled with a time-ordered one before the first attempt, so a retry
        returns the signature the server recorded. Returns the SignedAttestation."""
        att = dict(attestation)
        if att.get("nonce") is None:
            att["nonce"] = time_ordered_nonce()
        return self._call("POST", "/v1/poai/sign", {"key": key, "attestation": att})

    def sign_poai_batch(self, key: str, attestations: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Sign many attestations under one Merkle root: one BatchItem (with its proof) each."""
        atts = []
        for a in attestations:
            a = dict(a)
            if a.get("nonce") is None:
                a["nonce"] = time_ordered_nonce()
            atts.append(a)
        v = self._call("POST", "/v1/poai/sign-batch", {"key": key, "attestations": atts})
        return _list(v, "items")

    def verify_poai(self, signed: Dict[str, Any]) -> Dict[str, Any]:
        """VerifyPoAI: ``{"valid": bool, "reason": str | None}`` (reason: bad_signature,
        digest_mismatch, expired, not_yet_valid, replayed, unknown_key, ...)."""
        return self._call("POST", "/v1/poai/verify", signed)

    def verify_poai_batch_item(self, item: Dict[str, Any]) -> Dict[str, Any]:
        """Verify one item of a PoAI batch with its inclusion proof."""
        return self._call("POST", "/v1/poai/verify-item", item)

    def sign_hmm_settlement(
        self,
        key: str,
        settlement: Dict[str, Any],
        attestation: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """SignHMMSettlement with an ``hmm:`` key. With ``attestation`` (the SignedAttestation
        it pays for), the server checks it and that its digest is the settlement's; either way
        the attestation is consumed. A missing ``nonce`` is filled in. Returns the
        SignedSettlement."""
        s = dict(settlement)
        if s.get("nonce") is None:
            s["nonce"] = time_ordered_nonce()
        body: Dict[str, Any] = {"key": key, "settlement": s}
        if attestation is not None:
            body["attestation"] = attestation
        return self._call("POST", "/v1/hmm/sign", body)

    def verify_hmm_settlement(
        self, signed: Dict[str, Any], attestation: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        """Verify a SignedSettlement (and, when given, the attestation it settles)."""
        body: Dict[str, Any] = {"signed": signed}
        if attestation is not None:
            body["attestation"] = attestation
        return self._call("POST", "/v1/hmm/verify", body)

    # ---- keys and general encryption ---------------------------------------------------------

    def create_key(
        self, name: str, algorithm: Optional[str] = None, *, rotation_days: Optional[int] = None
    ) -> Dict[str, Any]:
        """Create a key ``purpose:customer:name``; ``algorithm`` defaults to the purpose's."""
        body: Dict[str, Any] = {"name": name}
        if algorithm is not None:
            body["algorithm"] = algorithm
        if rotation_days is not None:
            body["rotation_days"] = rotation_days
        return self._call("POST", "/v1/keys", body, retry=False)

    def get_key(self, name: str) -> Dict[str, Any]:
        """A key's KeyInfo: versions, states, origin, public key and address."""
        return self._call("GET", f"/v1/keys/{_seg(name)}")

    def list_keys(self, prefix: str = "") -> List[Dict[str, Any]]:
        """The keys the token may see, optionally those whose name starts with ``prefix``."""
        q = f"?prefix={urllib.parse.quote(prefix)}" if prefix else ""
        return _list(self._call("GET", f"/v1/keys{q}"), "keys")

    def rotate_key(self, name: str) -> Dict[str, Any]:
        """Add a version and make it primary; old versions still decrypt and verify."""
        return self._call("POST", f"/v1/keys/{_seg(name)}/rotate", {}, retry=False)

    def public_key(self, name: str) -> Dict[str, Any]:
        """A signing key's public key (hex) and, for secp256k1, its address."""
        return self._call("GET", f"/v1/keys/{_seg(name)}/public")

    def encrypt(self, key: str, plaintext: bytes, aad: bytes = b"") -> Dict[str, Any]:
        """Encrypt a small payload under a ``data:`` or ``model:`` key: ``{"key", "version",
        "ciphertext"}``, the ciphertext as text ``hkms:vN:…``."""
        body: Dict[str, Any] = {"plaintext": _b64(plaintext)}
        if aad:
            body["aad"] = _b64(aad)
        return self._call("POST", f"/v1/keys/{_seg(key)}/encrypt", body)

    def decrypt(self, key: str, ciphertext: str, aad: bytes = b"") -> bytes:
        """Decrypt what :meth:`encrypt` returned (the same ``aad``): the plaintext bytes."""
        body: Dict[str, Any] = {"ciphertext": ciphertext}
        if aad:
            body["aad"] = _b64(aad)
        v = self._call("POST", f"/v1/keys/{_seg(key)}/decrypt", body)
        return base64.b64decode(v["plaintext"])

    def generate_data_key(self, key: str, aad: bytes = b"") -> Dict[str, Any]:
        """A fresh 256-bit data key wrapped under ``key``: ``{"key", "version", "plaintext",
        "ciphertext"}`` with ``plaintext`` as bytes (use it, never store it) and
        ``ciphertext`` the wrapped key to store."""
        body: Dict[str, Any] = {}
        if aad:
            body["aad"] = _b64(aad)
        v = self._call("POST", f"/v1/keys/{_seg(key)}/datakey", body)
        v["plaintext"] = base64.b64decode(v["plaintext"])
        return v

    def unwrap_data_key(self, key: str, ciphertext: str, aad: bytes = b"") -> bytes:
        """The plaintext of a data key from :meth:`generate_data_key`'s ``ciphertext``."""
        body: Dict[str, Any] = {"ciphertext": ciphertext}
        if aad:
            body["aad"] = _b64(aad)
        v = self._call("POST", f"/v1/keys/{_seg(key)}/unwrap", body)
        return base64.b64decode(v["plaintext"])

    def sign(self, key: str, message: bytes, *, prehashed: bool = False) -> Dict[str, Any]:
        """Sign a message with an ``api:`` key: ``{"key", "version", "algorithm",
        "signature", "signer"}``."""
        return self._call(
            "POST", f"/v1/keys/{_seg(key)}/sign", {"message": _b64(message), "prehashed": prehashed}
        )

    def verify(self, key: str, message: bytes, signature: str, *, prehashed: bool = False) -> Dict[str, Any]:
        """Verify a signature from :meth:`sign`: ``{"valid": bool, ...}``."""
        return self._call(
            "POST",
            f"/v1/keys/{_seg(key)}/verify",
            {"message": _b64(message), "signature": signature, "prehashed": prehashed},
        )

    # ---- tokens and audit ------------------------------------------------------------------

    def create_token(
        self,
        tenant: str,
        roles: Sequence[str],
        patterns: Optional[Sequence[str]] = None,
        description: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Create an API token for ``tenant`` with ``roles`` (admin, encrypt, decrypt, sign,
        verify, audit), optionally limited to key-name ``patterns`` (``model:acme:*``). The
        answer's ``token`` is shown only this once."""
        body: Dict[str, Any] = {"tenant": tenant, "roles": list(roles)}
        if patterns is not None:
            body["patterns"] = list(patterns)
        if description is not None:
            body["description"] = description
        return self._call("POST", "/v1/tokens", body, retry=False)

    def list_tokens(self) -> List[Dict[str, Any]]:
        """The tokens (never their secrets)."""
        return _list(self._call("GET", "/v1/tokens"), "tokens")

    def revoke_token(self, id: str) -> Dict[str, Any]:
        """Revoke a token by id; it is refused from then on."""
        return self._call("DELETE", f"/v1/tokens/{_seg(id)}", retry=False)

    def audit(self, after: int = 0, limit: int = 100) -> List[Dict[str, Any]]:
        """Audit records after sequence number ``after``, oldest first (needs the audit role)."""
        return _list(self._call("GET", f"/v1/audit?after={int(after)}&limit={int(limit)}"), "records")

    # ---- model files -----------------------------------------------------------------------

    def open_model_file(self, model: str, path: PathLike, *, threads: Optional[int] = None) -> "Any":
        """Unlock an encrypted model file for reading: the header goes to the server's
        ``/v1/models/{key}/unwrap`` (authorised for the decrypt role and audited there), the
        data key comes back into the Rust extension only. Returns a ``_native.PlainView``:
        ``read(start, end)`` decrypts only the segments covering that plaintext range, into a new
        NumPy ``uint8`` array."""
        from . import _native

        f = _native.EncryptedFile.open(os.fspath(path))
        key = model_key_name(model)
        answer = self._model_key(
            f"/v1/models/{_seg(key)}/unwrap", {"header": _b64(f.header)}
        )
        return f.unlock(answer, model_id=_model_id(key), threads=threads or self.threads)

    def _sealing_writer(
        self,
        model: str,
        path: PathLike,
        metadata: Union[bytes, str] = b"",
        segment_size: Optional[int] = None,
    ) -> Any:
        """A ``_native.SealingWriter`` for a new model file at ``path``: the server draws its
        header and data key (``/v1/models/{key}/datakey``, encrypt role, audited)."""
        from . import _native

        if isinstance(metadata, str):
            metadata = metadata.encode("utf-8")
        key = model_key_name(model)
        body: Dict[str, Any] = {"metadata": _b64(metadata)}
        if segment_size is not None:
            body["segment_size"] = int(segment_size)
        answer = self._model_key(f"/v1/models/{_seg(key)}/datakey", body)
        return _native.SealingWriter(os.fspath(path), answer, threads=self.threads)

    # ---- transport -------------------------------------------------------------------------

    def _model_key(self, path: str, body: Dict[str, Any]) -> bytearray:
        """A model-key answer as a bytearray (it carries a data key; the extension zeroes it)."""
        v = self._call("POST", path, body, raw=True)
        assert isinstance(v, bytearray)
        return v

    def _call(
        self,
        method: str,
        path: str,
        body: Optional[Dict[str, Any]] = None,
        *,
        retry: bool = True,
        raw: bool = False,
    ) -> Any:
        attempts = 1 + (self.retries if retry else 0)
        delay = 0.1
        for attempt in range(attempts):
            try:
                return self._once(method, path, body, raw)
            except errors.Unavailable:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - getattr(self._local, "last", 0.0) > _IDLE:
            # The server closes idle connections (server.header_read_timeout_secs, 10 s by
            # default); drop ours first rather than send on one it may be closing.
            conn.close()
            conn = None
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout, context=self._ssl
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            self._local.reused = False
        else:
            self._local.reused = True
        return conn

    def _once(self, method: str, path: str, body: Optional[Dict[str, Any]], raw: bool) -> Any:
        try:
            return self._exchange(method, path, body, raw)
        except _Stale:
            # A kept-alive connection the server had closed: the request never reached it.
            return self._exchange(method, path, body, raw)

    def _exchange(self, method: str, path: str, body: Optional[Dict[str, Any]], raw: bool) -> Any:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._conn()
        try:
            conn.request(method, self._base_path + path, body=data, headers=headers)
            resp = conn.getresponse()
            status = resp.status
            retry_after = resp.getheader("retry-after")
            length = resp.getheader("content-length")
            if raw and 200 <= status < 300 and length is not None:
                payload: Union[bytes, bytearray] = _read_into(resp, int(length))
            else:
                payload = resp.read()
            self._local.last = time.monotonic()
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self._local.conn = None
            stale = isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError))
            if stale and self._local.reused:
                raise _Stale() from e
            hint = ""
            if isinstance(e, http.client.BadStatusLine) or "BadStatusLine" in type(e).__name__:
                hint = (
                    " (it did not answer HTTP/1.1: is this the gRPC address? REST listens on "
                    "server.rest_addr, 127.0.0.1:8200 by default)"
                )
            raise errors.Unavailable(f"cannot reach the server at {self.url}: {e}{hint}") from e
        if 200 <= status < 300:
            if raw:
                return payload if isinstance(payload, bytearray) else bytearray(payload)
            if not payload:
                return None
            try:
                return json.loads(payload)
            except ValueError:
                raise errors.InternalError(f"the server answered {status} without a JSON body", status=status)
        code = errors.from_status(status)
        message = f"the server answered {status}"
        request_id = None
        try:
            err = json.loads(payload)["error"]
            code = err.get("code") or code
            message = err.get("message") or message
            request_id = err.get("request_id")
        except (ValueError, KeyError, TypeError):
            pass
        wait = int(retry_after) if retry_after and retry_after.isdigit() else None
        raise errors.from_code(code, message, request_id=request_id, status=status, retry_after=wait)


# ---- helpers -------------------------------------------------------------------------------

#: Seconds an idle keep-alive connection is kept (below the server's 10 s idle timeout).
_IDLE = 4.0


class _Stale(Exception):
    """A reused connection was found closed before the server read the request."""



def model_key_name(model: str) -> str:
    """``acme:gpt4`` → ``model:acme:gpt4``; a full key name is kept."""
    if model.startswith("model:") or model.count(":") >= 2:
        return model
    return f"model:{model}"


def _model_id(key: str) -> Optional[str]:
    """The model id a file for ``key`` carries (``model:acme:gpt4`` → ``acme:gpt4``); None for a
    name whose separator is not ``:`` (the server checks it then)."""
    return key[len("model:"):] if key.startswith("model:") else None


def time_ordered_nonce() -> str:
    """A fresh 32-byte nonce as ``0x``-hex: nanoseconds since the epoch (16 bytes, big-endian),
    then 16 random bytes. Nonces that sort by time are recorded faster by the server."""
    return "0x" + time.time_ns().to_bytes(16, "big").hex() + os.urandom(16).hex()


def _b64(b: Union[bytes, bytearray, memoryview]) -> str:
    return base64.b64encode(bytes(b)).decode("ascii")


def _seg(s: str) -> str:
    return urllib.parse.quote(s, safe="-._~:")


def _list(v: Any, field: str) -> List[Dict[str, Any]]:
    if isinstance(v, dict) and field in v:
        return v[field]
    return v


def _read_into(resp: http.client.HTTPResponse, length: int) -> bytearray:
    buf = bytearray(length)
    view = memoryview(buf)
    got = 0
    while got < length:
        n = resp.readinto(view[got:])
        if not n:
            raise errors.Unavailable("the server's answer was cut short")
        got += n
    view.release()
    return buf


def _cli_json(exe: PathLike, data_dir: PathLike, config: Optional[PathLike], *args: str) -> Any:
    """Run the CLI offline on a data directory with --json; its answer, or its error raised."""
    cmd = [os.fspath(exe), "--data-dir", os.fspath(data_dir), "--json"]
    if config is not None:
        cmd += ["--config", os.fspath(config)]
    env = dict(os.environ)
    env.pop("HANZO_KMS_SERVER", None)
    r = subprocess.run(cmd + list(args), capture_output=True, stdin=subprocess.DEVNULL, env=env)
    if r.returncode != 0:
        text = r.stderr.decode("utf-8", "replace").strip()
        try:
            err = json.loads(text.splitlines()[-1])
            err = err.get("error", err)
            code, message = str(err.get("code", "internal")), str(err.get("message", text))
        except (ValueError, IndexError, AttributeError):
            code, message = "internal", text
        raise errors.from_code(code, f"hanzo-kms {' '.join(args[:2])}: {message}")
    return json.loads(r.stdout)


def _serve_address(out_path: str) -> Optional[str]:
    try:
        with open(out_path, encoding="utf-8") as f:
            for line in f:
                if '"rest"' in line:
                    return json.loads(line)["rest"]
    except (OSError, ValueError, KeyError):
        return None
    return None
