"""What goes through the Vonage SDK as we want it (see `batchcalls.adapters.telephony.vonage`): the transport
adapter under its requests session, and numbers and NCCO actions in the SDK's forms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from vonage_voice.models import Connect, Dtmf, Input, Speech, Talk, WebsocketEndpoint

# Connection errors happen before the request is sent, so retrying them cannot create a call.
CONNECT_RETRIES = 2


class SafeCreateAdapter(HTTPAdapter):
    """The transport under the SDK's requests session: no retry of anything that may have been
    sent, and our CA bundle whatever the environment says.

    Connections are kept alive: a create on a warm connection reaches Vonage in a few ms with
    little spread, which keeps creates spaced as the calls-per-second gate spaced them (a TLS
    handshake per create added 5-30 ms of spread). A pooled connection the server closed while
    idle is noticed and replaced by urllib3 before use; if the server closes it just as a create
    goes out, that create reads as "maybe placed" like any dropped one: never re-sent."""

    def __init__(self, ca_bundle: str | None) -> None:
        retry = Retry(
            total=CONNECT_RETRIES,
            connect=CONNECT_RETRIES,
            read=0,
            status=0,
            other=0,
            redirect=0,
            backoff_factor=0.1,
            raise_on_status=False,
        )
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=retry)
        self.ca_bundle = ca_bundle

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.ca_bundle:
            kwargs["verify"] = self.ca_bundle
        return super().send(request, **kwargs)


def digits(number: str) -> str:
    """Vonage wants numbers as digits only: `447700900000`, not `+447700900000`."""
    return number.strip().lstrip("+")


def sdk_action(action: Mapping[str, Any]) -> Talk | Input | Connect:
    """One NCCO action (Vonage's JSON, from `batchcalls.adapters.telephony.ncco`) as the SDK's model."""
    fields = {k: v for k, v in action.items() if k != "action"}
    kind = action["action"]
    if kind == "talk":
        return Talk(**fields)
    if kind == "input":
        dtmf, speech = fields.pop("dtmf", None), fields.pop("speech", None)
        return Input(
            dtmf=Dtmf(**dtmf) if dtmf is not None else None,
            speech=Speech(**speech) if speech is not None else None,
            **fields,
        )
    if kind == "connect":
        endpoints = [
            WebsocketEndpoint(uri=e["uri"], contentType=e["content-type"], headers=e.get("headers"))
            for e in fields["endpoint"]
        ]
        return Connect(endpoint=endpoints, from_=fields.get("from"))
    raise ValueError(f"no SDK model for NCCO action {kind!r}")
