"""Authentication scrambles: mysql_native_password and caching_sha2_password.

Both plugins answer a 20-byte nonce. The server side here verifies against a
plaintext password (the proxy's users come from config), so "verify" recomputes
the client's scramble and compares in constant time.

caching_sha2_password has two paths: fast auth (the scramble, accepted when the
server has seen this user's password) and full auth (the password itself, sent
in clear over TLS, or RSA-OAEP-encrypted after XOR with the nonce).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

NATIVE_PASSWORD = "mysql_native_password"
CACHING_SHA2_PASSWORD = "caching_sha2_password"
CLEAR_PASSWORD = "mysql_clear_password"
SUPPORTED_PLUGINS = (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD)

# caching_sha2_password AuthMoreData codes.
SHA2_REQUEST_PUBLIC_KEY = 0x02
SHA2_FAST_AUTH_SUCCESS = 0x03
SHA2_PERFORM_FULL_AUTH = 0x04

NONCE_LENGTH = 20


def new_nonce() -> bytes:
    """20 random bytes in 1..127 without NUL or '$', as MySQL servers generate them."""
    out = bytearray(secrets.token_bytes(NONCE_LENGTH))
    for i, b in enumerate(out):
        b &= 0x7F
        if b == 0 or b == 0x24:
            b += 1
        out[i] = b
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def native_scramble(password: bytes, nonce: bytes) -> bytes:
    """SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))); empty for an empty password."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(nonce[:20] + stage2).digest())


def native_verify(password: bytes, nonce: bytes, response: bytes) -> bool:
    return hmac.compare_digest(native_scramble(password, nonce), response)


def sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce); empty for an empty password."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + nonce[:20]).digest())


def sha2_verify(password: bytes, nonce: bytes, response: bytes) -> bool:
    return hmac.compare_digest(sha2_scramble(password, nonce), response)


def scramble(plugin: str, password: bytes, nonce: bytes) -> bytes:
    """The client's first answer for ``plugin`` (what a connector sends)."""
    if plugin == NATIVE_PASSWORD:
        return native_scramble(password, nonce)
    if plugin == CACHING_SHA2_PASSWORD:
        return sha2_scramble(password, nonce)
    if plugin == CLEAR_PASSWORD:
        return password + b"\0"
    raise ValueError(f"unsupported authentication plugin {plugin!r}")


def verify(plugin: str, password: bytes, nonce: bytes, response: bytes) -> bool:
    if plugin == NATIVE_PASSWORD:
        return native_verify(password, nonce, response)
    if plugin == CACHING_SHA2_PASSWORD:
        return sha2_verify(password, nonce, response)
    return False


def xor_password(password: bytes, nonce: bytes) -> bytes:
    """password + NUL, XORed with the nonce repeated (the input of the RSA step)."""
    data = password + b"\0"
    n = len(nonce)
    return bytes(b ^ nonce[i % n] for i, b in enumerate(data))


def _oaep():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def rsa_encrypt_password(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """Client side of full auth without TLS: RSA-OAEP(SHA1) of the XORed password."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_pem)
    return key.encrypt(xor_password(password, nonce), _oaep())


def rsa_decrypt_password(ciphertext: bytes, nonce: bytes, private_key) -> bytes:
    """Server side: the password (without its NUL) from an RSA full-auth answer.

    Raises ValueError when the ciphertext does not decrypt.
    """
    data = private_key.decrypt(ciphertext, _oaep())
    n = len(nonce)
    plain = bytes(b ^ nonce[i % n] for i, b in enumerate(data))
    if not plain.endswith(b"\0"):
        raise ValueError("decrypted password is not NUL-terminated")
    return plain[:-1]


class RsaKeyPair:
    """An RSA key pair made at startup for caching_sha2_password full auth without TLS."""

    def __init__(self, bits: int = 2048):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.public_pem = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def decrypt_password(self, ciphertext: bytes, nonce: bytes) -> bytes:
        return rsa_decrypt_password(ciphertext, nonce, self.private_key)
