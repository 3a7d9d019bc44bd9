"""Tokens an attacker can make without the server's secret, built by hand.

PyJWT (rightly) refuses to HMAC with a PEM key and the test environment has no ``cryptography``
package, so RS256 signing is done here in a few lines of textbook RSA (PKCS#1 v1.5, SHA-256):
enough for a real RS256 signature that any verifier holding the public key would accept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def _probably_prime(n: int, rounds: int = 24) -> bool:
    if n < 4:
        return n in (2, 3)
    for small in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % small == 0:
            return n == small
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | 1
        if _probably_prime(candidate):
            return candidate


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_length(len(raw)) + raw


@dataclass(frozen=True)
class RsaKey:
    n: int
    e: int
    d: int

    @classmethod
    def generate(cls, bits: int = 2048) -> RsaKey:
        e = 65537
        while True:
            p, q = _prime(bits // 2), _prime(bits // 2)
            phi = (p - 1) * (q - 1)
            if p != q and phi % e:
                return cls(n=p * q, e=e, d=pow(e, -1, phi))

    def sign(self, message: bytes) -> bytes:
        size = (self.n.bit_length() + 7) // 8
        digest = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        encoded = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
        return pow(int.from_bytes(encoded, "big"), self.d, self.n).to_bytes(size, "big")

    def verify(self, message: bytes, signature: bytes) -> bool:
        size = (self.n.bit_length() + 7) // 8
        recovered = pow(int.from_bytes(signature, "big"), self.e, self.n).to_bytes(size, "big")
        return recovered.endswith(hashlib.sha256(message).digest())

    def public_pem(self) -> str:
        """The public key as PKCS#1 PEM: what an HS/RS confusion attack HMACs with."""
        body = _der_integer(self.n) + _der_integer(self.e)
        der = b"\x30" + _der_length(len(body)) + body
        lines = base64.encodebytes(der).decode().replace("\n", "")
        wrapped = "\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
        return f"-----BEGIN RSA PUBLIC KEY-----\n{wrapped}\n-----END RSA PUBLIC KEY-----\n"

    def jwk(self) -> dict[str, str]:
        def number(value: int) -> str:
            return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return {"kty": "RSA", "n": number(self.n), "e": number(self.e)}


def rs256(claims: dict[str, Any], key: RsaKey, **header: Any) -> str:
    signing_input = f"{b64json({'alg': 'RS256', 'typ': 'JWT', **header})}.{b64json(claims)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


def hmac_token(claims: dict[str, Any], key: bytes, alg: str = "HS256") -> str:
    """A token HMAC-SHA256'd with ``key`` whatever its header's ``alg`` says."""
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims)}."
