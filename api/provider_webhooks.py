"""Vonage's webhooks: call status events and input results. No API key: when
`VONAGE_SIGNATURE_SECRET` is set, each request must carry Vonage's signature (a JWT over the
body's SHA-256), else it gets 401 and changes nothing.

They answer fast (Vonage retries a webhook not answered within seconds): a status event becomes
a `record_event` task; an input result is stored here, before the input webhook answers with the
NCCO of the script's next segment (what a callee said or typed never rides in a task's
arguments, which Flower and `celery inspect` show). Translation lives in
`batchcalls.telephony.vonage_webhooks`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from batchcalls import ncco
from batchcalls.engine import Engine
from batchcalls.errors import MalformedRequest
from batchcalls.logs import quoted
from batchcalls.store import calls
from batchcalls.telephony import vonage_webhooks as vw
from batchcalls.voices import voice_catalog

log = logging.getLogger("batchcalls.api")

bp = Blueprint("provider_webhooks", __name__)


def _engine() -> Engine:
    engine: Engine = current_app.extensions["batchcalls.engine"]
    return engine


def _verified_payload() -> dict[str, Any]:
    """The request's JSON body, after its signature is checked (when a secret is configured)."""
    body = request.get_data(cache=True)
    secret = _engine().settings.vonage_signature_secret
    if secret:
        vw.verify_signature(request.headers.get("Authorization"), body, secret)
    if not body:
        return {}
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise MalformedRequest(f"webhook body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise MalformedRequest("webhook body is not a JSON object")
    return payload


def _ids() -> tuple[str, int] | None:
    """Our call id and attempt number from the webhook URL we gave Vonage."""
    call_id = request.args.get("call_id", "")
    try:
        attempt = int(request.args.get("attempt", ""))
    except ValueError:
        return None
    return (call_id, attempt) if call_id and "\x00" not in call_id and attempt >= 1 else None


@bp.post(vw.EVENT_PATH)
def vonage_event() -> ResponseReturnValue:
    payload = _verified_payload()
    ids = _ids()
    if ids is None:
        log.info("Vonage event without our call id ignored status=%s", quoted(payload.get("status")))
        return "", 204
    event = vw.event_from_webhook(ids[0], ids[1], payload, time.time())
    if event is not None:
        _engine().tasks.record_event(event, countdown=vw.settle_seconds(payload.get("status")))
    return "", 204


@bp.post(vw.INPUT_PATH)
def vonage_input() -> Response:
    """Store the callee's answer, and tell Vonage how the script goes on."""
    payload = _verified_payload()
    ids = _ids()
    step_arg = request.args.get("step", "")
    if ids is None or not step_arg.isdigit():
        return jsonify([])
    call_id, attempt = ids
    step_index = int(step_arg)
    engine = _engine()
    with engine.db.transaction() as cur:
        call = calls.load_call(cur, call_id)
    step = ncco.input_step(call["script"], step_index) if call is not None else None
    if call is None or step is None:
        log.warning("Vonage input for an unknown call ignored call_id=%s attempt=%d step=%s",
                    quoted(call_id), attempt, quoted(step_arg))
        return jsonify([])
    name = step.get("name")
    responses = vw.responses_from_input(payload, attempt, step_index, name if isinstance(name, str) else None,
                                        time.time())
    engine.record_responses(call_id, attempt, responses)
    voice = voice_catalog().get(call["voice_id"]) if call["voice_id"] else None
    settings = engine.settings
    actions = ncco.render(
        call["script"], voice, start=step_index + 1, from_number=settings.vonage_from_number,
        input_url=lambda i: vw.input_url(settings.public_base_url, call_id, attempt, i),
    )
    return jsonify(actions)


@bp.route(vw.ANSWER_PATH, methods=["GET", "POST"])
def vonage_answer() -> Response:
    """Outbound calls carry their NCCO inline; this answers calls made *to* the application's
    number (Vonage requires an answer URL): an empty NCCO, so they end at once."""
    _verified_payload()
    return jsonify([])
