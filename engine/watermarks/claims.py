"""Owner key pairs, signed claims and the Transform of dual embedding (Li et al., Alg. 1-3).

An owner makes an RSA key pair once (``wmtui keygen``), signs a verifier string (its
identifier and a UTC timestamp) at embedding time, and hands a verifier the *claim*: the
verifier string, the signature and the public key. The private key never leaves its 0600
file in a 0700 folder; a passphrase, when the key has one, is read from an environment
variable or a prompt, never from a flag (flags end up in shell history and process lists).

Transform (Algorithm 2) turns a signature into the watermark, deterministically and for
every later version of wmtui alike, so the byte layout is fixed here and pinned by a test:

- each field has its own hash: ``SHA-256(b"wmtui-dual-v1/" + FIELD + b"/" + signature)``
  with FIELD one of ``pattern-0``, ``pattern-1``, ... ``position``, ``label``, ``extreme``;
- pattern: the first n*n bits of ``pattern-0 || pattern-1 || ...``, most significant bit of
  each byte first, row-major over the n x n square (1: +lambda, 0: -lambda);
- position: big-endian uint32 of ``position[0:4]`` mod (height - n + 1) is the square's top
  row, of ``position[4:8]`` mod (width - n + 1) its left column;
- true-embedding label: big-endian uint32 of ``label[0:4]`` mod the number of classes;
- lambda: 1000 + (big-endian uint32 of ``extreme[0:4]`` mod 2001), in [1000, 3000]; our
  reading of "extreme value" for inputs scaled to [0, 1] (the text lost the formula).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from engine.errors import ConfigError, RunError
from engine.runs import atomic_write_bytes, atomic_write_json, read_json

PRIVATE_PEM = "private.pem"
PUBLIC_PEM = "public.pem"
DEFAULT_BITS = 3072
PASSPHRASE_ENV = "WMTUI_KEY_PASSPHRASE"
CLAIM_FORMAT = 1
TRANSFORM_TAG = b"wmtui-dual-v1/"
LAMBDA_LOW, LAMBDA_SPAN = 1000, 2001
CLAIM_FIELDS = ("verifier", "signature", "public_key", "params")


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


# -- key pairs ------------------------------------------------------------------------------
def create_key_pair(
    folder: Path, bits: int = DEFAULT_BITS, passphrase: bytes | None = None
) -> Path:
    """An RSA key pair in ``folder`` (0700): ``private.pem`` (0600, encrypted with
    ``passphrase`` when given) and ``public.pem``. An existing private key is never replaced."""
    if bits < 2048:
        raise ConfigError(f"--bits must be at least 2048, got {bits}")
    if (folder / PRIVATE_PEM).exists():
        raise RunError(f"{folder / PRIVATE_PEM} already exists; refusing to replace a private key")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
    except OSError as exc:
        raise RunError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    atomic_write_bytes(folder / PRIVATE_PEM, pem, mode=0o600)
    atomic_write_bytes(folder / PUBLIC_PEM, public_pem(private).encode(), mode=0o644)
    return folder


#: ``--signing-key demo``: a classroom key pair made once in the user's data directory
#: (``$WMTUI_DEMO_KEY_DIR`` overrides it), so the `piracy` scenario runs out of the box
DEMO_KEY = "demo"


def signing_key_folder(value: str) -> Path:
    """The key-pair folder ``--signing-key`` names; ``demo`` is made on first use."""
    if value != DEMO_KEY:
        return Path(value)
    env = os.environ.get("WMTUI_DEMO_KEY_DIR")
    if env:
        folder = Path(env)
    else:
        import platformdirs

        folder = Path(platformdirs.user_data_dir("wmtui")) / "keys" / DEMO_KEY
    if not (folder / PRIVATE_PEM).exists():
        create_key_pair(folder, bits=2048)
    return folder


def passphrase_from_env() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV, "")
    return value.encode() if value else None


@functools.lru_cache(maxsize=8)
def _parsed_pem(data: bytes, passphrase: bytes | None) -> Any:
    """The key in ``data``, parsed once: parsing checks the RSA key (0.1 s), and a recipe's
    check reads the same key for every trial of a dual scheme."""
    return serialization.load_pem_private_key(data, password=passphrase)


def load_private_key(folder: Path, passphrase: bytes | None = None) -> rsa.RSAPrivateKey:
    """The owner's private key; every way it can be wrong is one line."""
    path = folder / PRIVATE_PEM if folder.is_dir() else folder
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"signing key not found: {path} ({exc.strerror or exc})") from None
    try:
        key = _parsed_pem(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise ConfigError(
                f"{path} is encrypted: set {PASSPHRASE_ENV} to its passphrase"
            ) from None
        raise ConfigError(f"{path} is not encrypted; unset {PASSPHRASE_ENV}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{path} is not a readable PEM private key (corrupt, or a wrong passphrase)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{path} is not an RSA private key")
    return key


def public_pem(private: rsa.RSAPrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# -- claims -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Claim:
    """What an owner hands a verifier: never the private key."""

    verifier: str
    signature: str  # base64
    public_key: str  # PEM
    params: dict[str, Any]
    format: int = CLAIM_FORMAT

    @property
    def signature_bytes(self) -> bytes:
        return base64.b64decode(self.signature)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> Claim:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: a claim is a JSON object")
        missing = [f for f in CLAIM_FIELDS if f not in raw]
        if missing:
            raise ConfigError(f"{where}: the claim lacks {', '.join(missing)}")
        if not all(isinstance(raw[f], str) for f in CLAIM_FIELDS[:3]):
            raise ConfigError(f"{where}: verifier, signature and public_key must be text")
        if not isinstance(raw["params"], dict):
            raise ConfigError(f"{where}: params must be an object")
        try:
            base64.b64decode(raw["signature"], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: the signature is not base64") from None
        return cls(raw["verifier"], raw["signature"], raw["public_key"], dict(raw["params"]))

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())


def load_claim(path: Path) -> Claim:
    """The claim in ``path``; a file that is not JSON is said so plainly (the parser's
    "Expecting value: line 1 column 1 (char 0)" told a newcomer nothing)."""
    try:
        raw = read_json(path, "claim")
    except RunError as exc:
        if isinstance(exc.__context__, json.JSONDecodeError | UnicodeDecodeError):
            raise ConfigError(f"claim {path} is not JSON") from None
        raise ConfigError(str(exc)) from None
    return Claim.from_dict(raw, str(path))


def verifier_string(owner: str, now: float | None = None) -> str:
    """The owner's identifier and a global (UTC) timestamp, as the paper's Algorithm 1."""
    if not owner.strip():
        raise ConfigError("--owner: give the owner's identifier (a name, an e-mail address)")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return f"{owner.strip()}|{stamp}"


def sign_claim(private: rsa.RSAPrivateKey, verifier: str, params: dict[str, Any]) -> Claim:
    signature = private.sign(verifier.encode(), _pss(), hashes.SHA256())
    return Claim(verifier, base64.b64encode(signature).decode(), public_pem(private), params)


def signature_problem(claim: Claim) -> str:
    """Why the claim's signature does not hold ("" when it does)."""
    try:
        public = serialization.load_pem_public_key(claim.public_key.encode())
    except (ValueError, UnsupportedAlgorithm):
        return "the claim's public key is not a readable PEM public key"
    if not isinstance(public, rsa.RSAPublicKey):
        return "the claim's public key is not an RSA key"
    try:
        public.verify(claim.signature_bytes, claim.verifier.encode(), _pss(), hashes.SHA256())
    except InvalidSignature:
        return "the signature does not match the verifier string under the claim's public key"
    return ""


# -- Transform (Algorithm 2) ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Mark:
    """The watermark a signature gives: an n x n bit square at (row, col), the true
    embedding's label, and the extreme value written for each bit (+lambda / -lambda)."""

    bits: tuple[int, ...]
    size: int
    row: int
    col: int
    label: int
    extreme: float


def _field(signature: bytes, name: str) -> bytes:
    return hashlib.sha256(TRANSFORM_TAG + name.encode() + b"/" + signature).digest()


def _u32(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


def transform(signature: bytes, height: int, width: int, classes: int, size: int = 6) -> Mark:
    """Algorithm 2, with the byte layout of the module docstring."""
    if not 1 <= size <= min(height, width):
        raise ConfigError(f"--size {size} does not fit a {height}x{width} image")
    stream = b""
    block = 0
    while len(stream) * 8 < size * size:
        stream += _field(signature, f"pattern-{block}")
        block += 1
    bits = tuple((stream[i // 8] >> (7 - i % 8)) & 1 for i in range(size * size))
    position = _field(signature, "position")
    row = _u32(position[0:4]) % (height - size + 1)
    col = _u32(position[4:8]) % (width - size + 1)
    label = _u32(_field(signature, "label")) % classes
    extreme = float(LAMBDA_LOW + _u32(_field(signature, "extreme")) % LAMBDA_SPAN)
    return Mark(bits, size, row, col, label, extreme)
