"""Restate's request-identity key pair: restate-server signs every request to the worker with the
private key; the worker (RESTATE_IDENTITY_KEYS or RESTATE_IDENTITY_KEYS_FILE) refuses what the
matching public key did not sign.

`python -m devstack identity --dir DIR` writes a new pair into DIR unless one is there (idempotent),
as the Docker Compose `identity` service does before restate-server and the worker start:

- `DIR/restate-identity.pem`: the ed25519 private key, PKCS#8 PEM (what `openssl genpkey -algorithm
  ed25519` writes and restate-server reads), readable by its owner only;
- `DIR/restate-identity.pub`: the public key as the SDK takes it, `publickeyv1_<base58>`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PRIVATE_KEY_FILE = "restate-identity.pem"
PUBLIC_KEY_FILE = "restate-identity.pub"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58(data: bytes) -> str:
    """Bitcoin-alphabet base58, as Restate encodes request-identity public keys."""
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 58)
        digits = BASE58[rest] + digits
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + digits


def public_key_of(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "publickeyv1_" + base58(raw)


@dataclass(frozen=True)
class KeyPair:
    private_pem: Path
    public_key: str


def ensure_key_pair(directory: Path) -> tuple[KeyPair, bool]:
    """The key pair in `directory`, made if missing; True when it was made now."""
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE
    if private.exists():
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{private} is not an ed25519 private key")
        made = False
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Created with owner-only permissions, then moved into place: never readable by others.
        tmp = private.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        tmp.replace(private)
        made = True
    name = public_key_of(key)
    if not public.exists() or public.read_text().strip() != name:
        public.write_text(name + "\n")
    return KeyPair(private, name), made
