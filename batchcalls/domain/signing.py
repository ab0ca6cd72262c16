"""Webhook secrets and the two signatures every outbound event carries (DESIGN.md §3).

- ``Batchcalls-Signature: t=<unix>,v1=<hex>``: Stripe's scheme, the hex HMAC-SHA256 of
  ``<t>.<body>`` keyed with the whole secret string, ``whsec_`` prefix included, so
  ``stripe.WebhookSignature.verify_header`` accepts it.
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``,
  the HMAC-SHA256 of ``<id>.<timestamp>.<body>`` keyed with the base64-decoded part of the secret
  after ``whsec_``, so ``standardwebhooks.Webhook(secret).verify`` accepts it.

While a secret is rotated, the caller passes every live secret and each header carries one
signature per secret; a receiver holding any one of them verifies. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from secrets import token_bytes

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32

BATCHCALLS_SIGNATURE_HEADER = "Batchcalls-Signature"
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"

DEFAULT_TOLERANCE_SECONDS = 300


def new_webhook_secret() -> str:
    """A fresh tenant secret: ``whsec_`` and the padded standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def _standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key Standard Webhooks uses: the base64-decoded part after ``whsec_``."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("webhook secret is not whsec_ followed by base64") from e
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _stripe_hex(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _standard_b64(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{event_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signature_headers(secrets: Sequence[str], event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers that sign `body` (the exact bytes POSTed) for event `event_id` at `timestamp`
    (unix seconds): ``Batchcalls-Signature`` and the three Standard Webhooks headers, each with
    one signature per secret, in the order the secrets are given.

    Raises ValueError when `secrets` is empty or a secret is not ``whsec_`` + base64.
    """
    if isinstance(secrets, str):
        # A lone string is a Sequence[str] too; signing with each character would be a silent bug.
        raise TypeError("secrets must be a sequence of secret strings, not one string")
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    timestamp = int(timestamp)
    stripe_parts = [f"t={timestamp}"]
    standard_parts = []
    for secret in secrets:
        stripe_parts.append(f"v1={_stripe_hex(secret, timestamp, body)}")
        key = _standard_webhooks_key(secret)
        standard_parts.append(f"v1,{_standard_b64(key, event_id, timestamp, body)}")
    return {
        BATCHCALLS_SIGNATURE_HEADER: ",".join(stripe_parts),
        WEBHOOK_ID_HEADER: event_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: " ".join(standard_parts),
    }


def verify_batchcalls_signature(
    secret: str,
    header: str,
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when `header` (a ``Batchcalls-Signature`` value) holds a ``v1`` signature of `body`
    made with `secret`, and its timestamp is within `tolerance` seconds of `now` (unix seconds)
    either way. A malformed header is False, never an exception.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            return False
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _stripe_hex(secret, timestamp, body).encode("ascii")
    # Bytes, because compare_digest refuses non-ASCII str; every candidate is compared, so
    # timing does not reveal which one matched.
    matches = [hmac.compare_digest(expected, c.encode("utf-8")) for c in candidates]
    return any(matches)
