"""The Vonage application's private key and the key of our webhook URLs' tokens (see
`batchcalls.adapters.telephony.vonage`)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from batchcalls.adapters.telephony.vonage_webhooks import url_key
from batchcalls.domain.errors import ConfigurationError
from config.settings import Settings

MAX_PATH_SHOWN = 255


def load_private_key(value: str) -> rsa.RSAPrivateKey:
    """The application's RSA private key from `VONAGE_PRIVATE_KEY`: PEM text (PKCS#8 or PKCS#1;
    literal `\\n` sequences, as environment variables carry them, are line breaks) or the path of
    a PEM file. Raises `ConfigurationError` naming what is wrong."""
    text = value.strip().strip("'\"")
    if "-----BEGIN" in text:
        data = text.replace("\\r\\n", "\n").replace("\\n", "\n").encode()
        where = "VONAGE_PRIVATE_KEY"
    else:
        path = Path(text).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            # Named only when it may be a path: a key pasted without its BEGIN line is key material,
            # and this message is logged.
            named = f"{path}: " if len(text) <= MAX_PATH_SHOWN and "\\n" not in text else ""
            raise ConfigurationError(
                f"VONAGE_PRIVATE_KEY is neither PEM text nor a readable key file: {named}{exc.strerror}"
            ) from exc
        where = f"VONAGE_PRIVATE_KEY file {path}"
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{where} is not a PEM private key without a password: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{where} is not an RSA key (Vonage signs application tokens with RS256)")
    return key


def pkcs8_pem(key: rsa.RSAPrivateKey) -> str:
    """The key as PKCS#8 PEM text, the one form the SDK takes as text."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode()


def webhook_url_key(settings: Settings) -> bytes:
    """The key of the tokens in the webhook URLs we give Vonage, the same in every process of the
    fleet: derived from `VONAGE_SIGNATURE_SECRET`, or (unsigned, in development) from the
    application's private key. Raises `ConfigurationError` when neither is there."""
    if settings.vonage_signature_secret:
        return url_key(settings.vonage_signature_secret.encode())
    if not settings.vonage_private_key:
        raise ConfigurationError("Vonage webhooks need VONAGE_SIGNATURE_SECRET (or, unsigned, VONAGE_PRIVATE_KEY)")
    key = load_private_key(settings.vonage_private_key)
    return url_key(
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
