"""Vonage's webhooks: call status events and input results, served only with
`BATCHCALLS_PROVIDER=vonage` (the simulator hands its events to the workers directly).

No API key; instead, before a request changes or reveals anything:

- its body is at most `MAX_BODY_BYTES` (413 otherwise; Content-Length is checked before a byte
  is read, a chunked body is read up to the limit);
- it carries Vonage's signature (a JWT keyed with `VONAGE_SIGNATURE_SECRET`, checked from the
  header before the body is read), young (`iat`), over this body (`payload_hash`), and not seen
  before (its `jti` is remembered in Redis); only `VONAGE_ALLOW_UNSIGNED=1` skips this;
- its URL is one we gave Vonage: the token in the query is an HMAC over the call id, attempt and
  step (see `vonage_webhooks.url_token`), so a signed body cannot be replayed against another
  call's URL, and an unsigned forgery must know a token only Vonage was given;
- an input result names the Vonage call (`uuid`) the attempt is (when it is known).

Else it gets 401 and changes nothing. They answer fast (Vonage retries a webhook not answered
within seconds): a status event goes into its call's event inbox shard (see `vonage_event` for
the order this keeps); an input result is stored here,
before the input webhook answers with the NCCO of the script's next segment (what a callee said
or typed never rides in a task's arguments, which Flower and `celery inspect` show).
Translation lives in `batchcalls.adapters.telephony.vonage_webhooks`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge, ServiceUnavailable

from batchcalls.adapters.logs import quoted
from batchcalls.adapters.store import calls
from batchcalls.adapters.telephony import ncco
from batchcalls.adapters.telephony import vonage_webhooks as vw
from batchcalls.domain import scripts
from batchcalls.domain.errors import MalformedRequest, PayloadTooLarge, Unauthorized
from batchcalls.domain.voices import voice_catalog
from batchcalls.engine import Engine
from config.settings import Settings

log = logging.getLogger("batchcalls.api")

bp = Blueprint("provider_webhooks", __name__)

_URL_KEY = "batchcalls.vonage_url_key"


def register(app: Flask, settings: Settings) -> None:
    """Serve Vonage's webhooks on `app` (for `BATCHCALLS_PROVIDER=vonage` only)."""
    from batchcalls.adapters.telephony.vonage import webhook_url_key  # the SDK, only where Vonage is used

    app.extensions[_URL_KEY] = webhook_url_key(settings)
    app.register_blueprint(bp)
    if not settings.vonage_signature_secret:
        log.warning(
            "VONAGE_SIGNATURE_SECRET is not set and VONAGE_ALLOW_UNSIGNED is: Vonage webhooks are"
            " accepted unsigned; for development only, never in production"
        )


def _engine() -> Engine:
    engine: Engine = current_app.extensions["batchcalls.engine"]
    return engine


@contextmanager
def _verified(ids: vw.WebhookIds | None) -> Iterator[dict[str, Any]]:
    """The webhook's JSON body, once every check has passed, in the order that reads least for a
    forgery: size, signature header, URL token, then the body and its hash; its signature is
    then taken once. When handling the body fails, the signature is given back, so that Vonage's
    retry of the request is taken."""
    if request.content_length is not None and request.content_length > vw.MAX_BODY_BYTES:
        raise _too_large()
    secret = _engine().settings.vonage_signature_secret
    claims = vw.verify_token(request.headers.get("Authorization"), secret, now=time.time()) if secret else None
    if ids is not None:
        vw.check_url_token(current_app.extensions[_URL_KEY], ids)
    body = _body()
    if claims is None:
        yield _json(body)
        return
    vw.check_payload_hash(claims, body)
    with _taken_once(vw.replay_key(claims)):
        yield _json(body)


def _body() -> bytes:
    """The body, refused beyond `MAX_BODY_BYTES`. A chunked body has no Content-Length; the
    WSGI server ends its stream, and a stream past the limit reads as cut off at the limit (no
    error), so one byte more than the limit is read to tell."""
    request.max_content_length = vw.MAX_BODY_BYTES + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge as exc:
        raise _too_large() from exc
    if len(body) > vw.MAX_BODY_BYTES:
        raise _too_large()
    return body


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"webhook body is larger than {vw.MAX_BODY_BYTES} bytes")


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise MalformedRequest(f"webhook body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise MalformedRequest("webhook body is not a JSON object")
    return payload


@contextmanager
def _taken_once(key: str) -> Iterator[None]:
    """Mark a signed webhook's token as taken, fleet-wide, or refuse it when it already was."""
    client = _engine().gates.redis
    try:
        fresh = client.set(key, b"1", nx=True, ex=vw.REPLAY_TTL_SECONDS)
    except redis.RedisError as exc:
        # Vonage retries a webhook it got no 2xx for.
        raise ServiceUnavailable("cannot check the webhook token for a replay now") from exc
    if not fresh:
        raise Unauthorized("webhook signature was already used (jti)")
    try:
        yield
    except Exception:
        try:
            client.delete(key)
        except redis.RedisError:
            log.warning("could not give back a webhook token after a failure; Vonage's retry will be refused")
        raise


def _ids(*, with_step: bool) -> vw.WebhookIds | None:
    """Our ids from the webhook URL; None for a URL without a call id (a webhook about a call
    that is not ours, e.g. one made to the application's number)."""
    if "call_id" not in request.args:
        return None
    return vw.parse_ids(request.args, with_step=with_step)


@bp.post(vw.EVENT_PATH)
def vonage_event() -> ResponseReturnValue:
    """A status event is added to its call's inbox shard (a Redis stream, `workers/inbox.py`)
    before the webhook is answered, whatever its status, and that shard's drains apply its
    entries one after another in the order they were added. So a call's events are applied in
    the order they reached Redis, however late a drain runs: `machine` and the `completed` Vonage
    posts right after it are applied in that order, and the `completed` finds the attempt already
    ended as a machine (a no-op in `lifecycle`). No event waits on a countdown, which would let a
    later event overtake one held in a lagging drain.

    The order at Redis is the sending order whenever Vonage posts an event after the one before
    it was answered: that one was in the stream before its 204. Only two webhooks of one call
    handled at the same time (by two API processes) can reach Redis in either order; the later
    one overtakes only if it arrives within the few milliseconds between the earlier one's
    arrival and its XADD (a JWT check and one Redis SET). The provider's `timestamp` does not
    settle that cheaply: once `completed` is applied the call is final, its event written, its
    slot freed and a retry decided, so a late `machine` would have to reopen an ended attempt
    (a new move of the state machine, and a correction of what was delivered), not merely be
    sorted; sorting the entries a drain reads together would help only when the drain lags,
    where the order is already the sending one; and Vonage's times are to the millisecond, so
    the two may carry the same one."""
    ids = _ids(with_step=False)
    with _verified(ids) as payload:
        if ids is None:
            log.info("Vonage event without our call id ignored status=%s", quoted(payload.get("status")))
            return "", 204
        # An event whose uuid is not the attempt's Vonage call changes nothing (`calls.apply_events`).
        event = vw.event_from_webhook(ids.call_id, ids.attempt, payload, time.time())
        if event is not None:
            _engine().tasks.record_event(event)
        beeped = vw.beep_of(payload)
        if beeped is not None:  # its message is spoken by a transfer (a task): this answer is not read
            _engine().tasks.leave_voicemail(ids.call_id, ids.attempt, beeped)
        return "", 204


@bp.post(vw.INPUT_PATH)
def vonage_input() -> Response:
    """Store the callee's answer, and tell Vonage how the script goes on."""
    ids = _ids(with_step=True)
    with _verified(ids) as payload:
        return _input(payload, ids) if ids is not None else jsonify([])


def _input(payload: dict[str, Any], ids: vw.WebhookIds) -> Response:
    assert ids.step is not None
    call_id, attempt, step_index = ids.call_id, ids.attempt, ids.step
    engine = _engine()
    with engine.db.transaction() as cur:
        call = calls.load_call(cur, call_id)
        attempts = calls.attempts_of(cur, [call_id])[call_id] if call is not None else []
    step = scripts.input_step(call["script"], step_index) if call is not None else None
    found = [a for a in attempts if a["number"] == attempt]
    if call is None or step is None or not found:
        log.warning(
            "Vonage input for an unknown call ignored call_id=%s attempt=%d step=%d",
            quoted(call_id),
            attempt,
            step_index,
        )
        return jsonify([])
    known = found[0]["provider_call_id"]
    uuid = payload.get("uuid")
    if known is not None and uuid != known:
        # Another Vonage call's result: it neither answers for this call nor gets its script.
        log.warning(
            "Vonage input about another call ignored call_id=%s attempt=%d uuid=%s",
            quoted(call_id),
            attempt,
            quoted(uuid),
        )
        return jsonify([])
    name = step.get("name")
    responses = vw.responses_from_input(
        payload, attempt, step_index, name if isinstance(name, str) else None, time.time()
    )
    if engine.record_input(call_id, attempt, step_index, responses):
        return jsonify([])  # the callee opted out: an empty NCCO ends the call at once
    voice = voice_catalog().get(call["voice_id"]) if call["voice_id"] else None
    settings = engine.settings
    key = current_app.extensions[_URL_KEY]
    actions = ncco.render(
        call["script"],
        voice,
        start=step_index + 1,
        from_number=settings.vonage_from_number,
        input_url=lambda i: vw.input_url(settings.public_base_url, call_id, attempt, i, key=key),
    )
    return jsonify(actions)


@bp.route(vw.ANSWER_PATH, methods=["GET", "POST"])
def vonage_answer() -> ResponseReturnValue:
    """Outbound calls carry their NCCO inline; this answers calls made *to* the application's
    number (Vonage requires an answer URL): an empty NCCO, so they end at once."""
    with _verified(None):
        return jsonify([])
