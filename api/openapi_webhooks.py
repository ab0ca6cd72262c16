"""The events POSTed to callback URLs, as OpenAPI 3.1 `webhooks`. No I/O."""

from __future__ import annotations

from typing import Any

from batchcalls.domain.events import CALL_EVENT_TYPES, EventType
from batchcalls.domain.signing import (
    BATCHCALLS_SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
)

SIGNATURE_HEADERS = [
    (
        BATCHCALLS_SIGNATURE_HEADER,
        '`t=<unix seconds>,v1=<hex>`: the hex HMAC-SHA256 of `t + "." + body` keyed with'
        " the whole webhook secret (`whsec_...`), Stripe's scheme: `stripe.WebhookSignature.verify_header` accepts it."
        " While a secret is rotated, one `v1=` per secret.",
        "t=1763905414,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
    ),
    (WEBHOOK_ID_HEADER, "Standard Webhooks: the event's `id`.", "evt_5f1c2a9e0b7d4c3a8e6f1d2c"),
    (WEBHOOK_TIMESTAMP_HEADER, "Standard Webhooks: unix seconds of the delivery.", "1763905414"),
    (
        WEBHOOK_SIGNATURE_HEADER,
        'Standard Webhooks: `v1,<base64>`, the HMAC-SHA256 of `id + "." + timestamp + "." +'
        " body` keyed with the base64-decoded part of the secret (`standardwebhooks`' `Webhook(secret).verify` accepts"
        " it). While a secret is rotated, one `v1,` per secret, space-separated.",
        "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    ),
]

EVENT_SUMMARIES = {
    EventType.BATCH_STARTED: "The batch's first call was dialed.",
    EventType.CALL_COMPLETED: "A call ended with outcome `completed` (answered by a person).",
    EventType.CALL_FAILED: "A call ended with any other final outcome but `cancelled`.",
    EventType.BATCH_COMPLETED: "Every call is final and at least one succeeded; sent once per batch.",
    EventType.BATCH_FAILED: "Every call is final and none succeeded, or a fatal provider error aborted the batch;"
    " sent once per batch.",
    EventType.BATCH_CANCELLED: "The batch was cancelled and its last call is final: its terminal event instead of"
    " completed or failed; sent once per batch.",
    EventType.BATCH_PAUSED: "The batch was paused (`POST /v1/batches/{batch_id}/pause`): no call is dialed until it"
    " is resumed.",
    EventType.BATCH_RESUMED: "A paused batch was resumed (`POST /v1/batches/{batch_id}/resume`).",
}


def webhooks() -> dict[str, Any]:
    """One POST per event type, its body a schema name the caller turns into a reference."""
    parameters = [
        {
            "in": "header",
            "name": name,
            "required": True,
            "description": description,
            "schema": {"type": "string"},
            "example": example,
        }
        for name, description, example in SIGNATURE_HEADERS
    ]
    hooks = {}
    for event_type in EventType:
        schema = "CallEvent" if event_type in CALL_EVENT_TYPES else "BatchEvent"
        hooks[event_type.value] = {
            "post": {
                "operationId": f"event_{event_type.value.replace('.', '_')}",
                "summary": EVENT_SUMMARIES[event_type],
                "tags": ["events"],
                "description": "POSTed to the batch's `callback_url`, signed with the tenant's webhook secret. Delivered at"
                " least once (dedupe by `id`), in order per batch where possible, retried with exponential"
                " backoff for at least 24 hours until the receiver answers 2xx.",
                "parameters": parameters,
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                "responses": {
                    "2XX": {"description": "Received: the event is not sent again."},
                    "default": {"description": "Not received: the event is sent again later."},
                },
            }
        }
    return hooks
