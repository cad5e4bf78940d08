"""Sealed fields: PII in a sink's dead letters, encrypted so only a replay can read it back.

A dead letter carries the rejected row so that ``backbone dlq replay`` can write it again. For
the profile store that row holds PII (customer id, e-mail, phone, address), and the dead-letter
topic and files are read far more widely than the store. A table spec names its ``sealed``
fields and a secret reference (``env:VAR``); the writer then puts each such value into the dead
letter as ``{"$sealed": "<Fernet token>"}`` and the replay target opens it again. The key is
derived from the secret with HKDF (a separate purpose from any HMAC the secret also keys), so
the letters stay unreadable without the secret, and a wrong secret fails the replay loudly.

Example::

    sealer = FieldSealer("env:BACKBONE_PII_HASH_KEY", ("email", "phone"))
    doc = sealer.seal({"email": "a@b.c", "phone": None, "segment": "loyal"})
    assert sealer.unseal(doc)["email"] == "a@b.c"
"""

from __future__ import annotations

import base64
import json
from typing import Any

from retail_backbone.io.sinks.base import SinkConfigError, resolve_secret

__all__ = ["SEALED", "FieldSealer", "SealError"]

#: The marker key of a sealed value in a dead letter's JSON.
SEALED = "$sealed"
_INFO = b"retail-backbone dead-letter seal v1"


class SealError(ValueError):
    """A sealed value that cannot be opened (wrong secret, or a damaged letter)."""


class FieldSealer:
    """Seals and opens ``fields`` of a row's JSON document with a key derived from ``key_ref``.

    Picklable: the secret is resolved (and the key derived) on first use, on the worker.
    """

    def __init__(self, key_ref: str, fields: tuple[str, ...]) -> None:
        if not key_ref:
            raise SinkConfigError("sealed fields need a secret reference (e.g. env:VAR)")
        self.key_ref = key_ref
        self.fields = tuple(fields)
        self._fernet: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fernet": None}

    def check(self) -> None:
        """Resolve the secret now (a missing one is a configuration error at setup)."""
        self._cipher()

    def _cipher(self) -> Any:
        if self._fernet is None:
            from cryptography.fernet import Fernet
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            secret = resolve_secret(self.key_ref).encode()
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
            self._fernet = Fernet(base64.urlsafe_b64encode(key))
        return self._fernet

    def seal(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with each non-null sealed field replaced by ``{"$sealed": token}``."""
        out = dict(doc)
        for name in self.fields:
            value = out.get(name)
            if value is not None:
                plain = json.dumps(value, separators=(",", ":")).encode()
                out[name] = {SEALED: self._cipher().encrypt(plain).decode("ascii")}
        return out

    def unseal(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with every sealed value opened; raises ``SealError`` if one cannot be."""
        from cryptography.fernet import InvalidToken

        out = dict(doc)
        for name, value in doc.items():
            if isinstance(value, dict) and set(value) == {SEALED}:
                try:
                    plain = self._cipher().decrypt(value[SEALED].encode("ascii"))
                except (InvalidToken, UnicodeEncodeError, AttributeError) as exc:
                    raise SealError(
                        f"sealed field {name!r} cannot be opened with {self.key_ref} "
                        "(another secret, or a damaged letter)"
                    ) from exc
                out[name] = json.loads(plain)
        return out
