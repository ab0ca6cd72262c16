"""A call's script rendered to a Vonage NCCO (Call Control Object), in segments.

Pure: plain dicts in, plain dicts (Vonage's JSON) out, no I/O and no SDK.

- a `text` step is a `talk` action, with the `language` and `style` of the call's voice
  (its voice catalog entry); a talk right before an input lets the callee barge in;
- an `input` step is an `input` action whose `eventUrl` is our input webhook for that step;
- an `agent` step is a `connect` action to a `websocket` endpoint (16 kHz linear PCM), where a
  live AI voice agent takes over; the script goes on when the agent hangs up the socket.

Vonage runs an NCCO to its first `input`, posts the result to that input's `eventUrl`, and runs
the NCCO that webhook answers with. So a script is rendered in segments, each ending at an input
step (or at the script's end): the call is created with the first segment, and the input
webhook for step `i` answers with `render(script, ..., start=i + 1)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Action = dict[str, Any]
WEBSOCKET_CONTENT_TYPE = "audio/l16;rate=16000"

# Our option names (snake_case, like the rest of the API) to Vonage's.
_DTMF_NAMES = {"max_digits": "maxDigits", "timeout": "timeOut", "submit_on_hash": "submitOnHash"}
_SPEECH_NAMES = {
    "language": "language",
    "context": "context",
    "end_on_silence": "endOnSilence",
    "start_timeout": "startTimeout",
    "max_duration": "maxDuration",
}


def render(
    script: Mapping[str, Any],
    voice: Mapping[str, Any] | None,
    *,
    input_url: Callable[[int], str],
    from_number: str | None = None,
    start: int = 0,
) -> list[Action]:
    """The NCCO for the steps of a normalised `script` from `start` up to and including the next
    input step (or to the end). `voice` is the voice catalog entry of the call's `voice_id`
    (None: Vonage's default voice); `input_url(i)` is where the result of input step `i` goes;
    `from_number` is the caller id a `connect` action shows. Empty when no steps are left."""
    steps: list[Mapping[str, Any]] = list(script["steps"])
    actions: list[Action] = []
    for index in range(start, len(steps)):
        step = steps[index]
        kind = step.get("type", "text")
        if kind == "text":
            actions.append(_talk(step, voice, barge_in=_input_follows(steps, index)))
        elif kind == "input":
            actions.append(_input(step, voice, input_url(index)))
            break
        elif kind == "agent":
            actions.append(_connect(step, from_number))
        else:
            raise ValueError(f"step {index} has a type this renderer does not know: {kind!r}")
    return actions


def _input_follows(steps: list[Mapping[str, Any]], index: int) -> bool:
    """True when the next step that is not spoken text is an input step. Vonage allows `bargeIn`
    only on talks followed (past other talks) by an input."""
    for step in steps[index + 1 :]:
        kind = step.get("type", "text")
        if kind != "text":
            return bool(kind == "input")
    return False


def _talk(step: Mapping[str, Any], voice: Mapping[str, Any] | None, *, barge_in: bool) -> Action:
    action: Action = {"action": "talk", "text": step["text"]}
    if voice is not None:
        action["language"] = voice["language"]
        action["style"] = voice["style"]
        if voice.get("premium"):
            action["premium"] = True
    if barge_in:
        action["bargeIn"] = True
    return action


def _options(value: object, names: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):  # `true`: Vonage's defaults
        return {}
    return {names[key]: option for key, option in value.items() if key in names}


def _input(step: Mapping[str, Any], voice: Mapping[str, Any] | None, event_url: str) -> Action:
    action: Action = {"action": "input", "type": []}
    if "dtmf" in step:
        action["type"].append("dtmf")
        action["dtmf"] = _options(step["dtmf"], _DTMF_NAMES)
    if "speech" in step:
        action["type"].append("speech")
        speech = _options(step["speech"], _SPEECH_NAMES)
        if "language" not in speech and voice is not None:
            speech["language"] = voice["language"]  # listen in the language the call speaks
        action["speech"] = speech
    action["eventUrl"] = [event_url]
    action["eventMethod"] = "POST"
    return action


def _connect(step: Mapping[str, Any], from_number: str | None) -> Action:
    endpoint: dict[str, Any] = {"type": "websocket", "uri": step["url"], "content-type": WEBSOCKET_CONTENT_TYPE}
    if step.get("headers"):
        endpoint["headers"] = dict(step["headers"])
    action: Action = {"action": "connect", "endpoint": [endpoint]}
    if from_number:
        action["from"] = from_number.lstrip("+")
    return action


# Machine detection in the create request. Without a voicemail message Vonage hangs up on a
# machine and reports `machine` (the attempt's outcome): no minutes are spent on it. To leave a
# message, advanced machine detection listens for the beep: asynchronously (mode `default`, so a
# person hears the script at once, with no silence while it decides), and `continue` on a
# machine, whose beep Vonage reports as an event `machine` with `sub_state: beep_start`; then the
# call is transferred to `voicemail_ncco`. No beep within `beep_timeout` seconds (45 to 120):
# `sub_state: beep_timeout`, and the script goes on to its end on the machine.
MACHINE_DETECTION = "hangup"
VOICEMAIL_BEEP_TIMEOUT = 45
VOICEMAIL_DETECTION: dict[str, Any] = {
    "behavior": "continue",
    "mode": "default",
    "beep_timeout": VOICEMAIL_BEEP_TIMEOUT,
}
BEEP_STARTED = "beep_start"


def machine_detection(voicemail: str | None) -> dict[str, Any]:
    """The create request's machine-detection fields: for a call that hangs up on a machine
    (`voicemail` None), or for one that leaves the message `voicemail` after the beep."""
    if voicemail is None:
        return {"machine_detection": MACHINE_DETECTION}
    return {"advanced_machine_detection": dict(VOICEMAIL_DETECTION)}


def voicemail_ncco(text: str, voice: Mapping[str, Any] | None) -> list[Action]:
    """The NCCO a machine's call is transferred to after its beep: the message, spoken in the
    call's voice; the call ends after it."""
    return [_talk({"text": text}, voice, barge_in=False)]
