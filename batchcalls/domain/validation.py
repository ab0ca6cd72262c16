"""What a submitted batch means: from the schema-checked request body to a `NewBatch`.

Pure: no I/O (the voice catalog is passed in). `build_batch` judges the values in a fixed order
(phone numbers, as a list too, then scripts and voices, then concurrency, then retry_config) and
raises the first kind of error found, naming every problem of that kind in its details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from batchcalls.domain.call_lists import REJECT, checked_numbers, nothing_to_call, refuse_repeats
from batchcalls.domain.destinations import DestinationPolicy
from batchcalls.domain.errors import ConcurrencyLimit, Details, InvalidRequest, InvalidScript, summary
from batchcalls.domain.models import DEFAULT_CONCURRENCY, DEFAULT_PRIORITY, NewBatch, NewCall

# The phone numbers' checks, which the API, the CLI and the tests read here.
from batchcalls.domain.phone_numbers import check_phone_numbers as check_phone_numbers
from batchcalls.domain.phone_numbers import is_valid_number as is_valid_number
from batchcalls.domain.phone_numbers import normalize_phone_number as normalize_phone_number
from batchcalls.domain.phone_numbers import valid_region as valid_region
from batchcalls.domain.phone_numbers import warm_up as warm_up
from batchcalls.domain.policy import Policy
from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.scripts import normalize_script
from batchcalls.domain.states import RETRYABLE_OUTCOMES
from batchcalls.domain.templates import fill_scripts
from batchcalls.domain.timefmt import parse_expires_at, parse_start_at
from batchcalls.domain.voicemail import requested_voicemails
from batchcalls.domain.window_requests import requested_windows

# The default settings' policy: premium-rate, shared-cost, personal and non-geographic numbers
# blocked, every country allowed.
DEFAULT_DESTINATIONS = DestinationPolicy()


def _filled_scripts(calls: Sequence[Mapping[str, Any]], voices: Mapping[str, object]) -> list[Mapping[str, Any]]:
    scripts, problems = fill_scripts(calls)  # each call's variables filled in, then judged
    for index, call in enumerate(calls):
        voice_id = call.get("voice_id")
        if voice_id is not None and voice_id not in voices:
            problems[f"calls[{index}].voice_id"] = [f"unknown voice {voice_id!r}; known: {', '.join(sorted(voices))}"]
    if problems:
        raise InvalidScript(summary("invalid script", problems), problems)
    return scripts


def _concurrency(data: Mapping[str, Any], max_concurrency: int) -> int:
    # An absent concurrency never fails: it is the default, capped by the account's maximum.
    concurrency: int = data.get("concurrency", min(DEFAULT_CONCURRENCY, max_concurrency))
    if not 1 <= concurrency <= max_concurrency:
        message = f"must be between 1 and {max_concurrency}"
        raise ConcurrencyLimit(f"concurrency {message}", {"concurrency": [message]})
    return concurrency


def _retry_policy(config: Mapping[str, Any] | None) -> RetryPolicy:
    if config is None:
        return RetryPolicy()
    problems: Details = {}
    allowed = sorted(outcome.value for outcome in RETRYABLE_OUTCOMES)
    for index, name in enumerate(config.get("retry_on") or ()):
        if name not in allowed:
            problems[f"retry_config.retry_on[{index}]"] = [f"must be one of {', '.join(allowed)}"]
    # RetryPolicy holds the rules for each value. Building it from one field at a time lets
    # every bad field be named, not only the first its constructor trips over.
    for name in ("max_attempts", "delay", "backoff_multiplier"):
        if name in config:
            try:
                RetryPolicy.from_config({name: config[name]})
            except ValueError as e:
                problems[f"retry_config.{name}"] = [str(e)]
    if problems:
        raise InvalidRequest(summary("invalid retry_config", problems), problems)
    try:
        return RetryPolicy.from_config(dict(config))
    except ValueError as e:
        raise InvalidRequest(f"invalid retry_config: {e}", {"retry_config": [str(e)]}) from e


def check_call_count(body: object, policy: Policy) -> None:
    """Refuse a batch with more calls than the tenant's policy lets one batch hold, on the request
    body as parsed from JSON, before the schema's per-call checks (cheap for any size). Raises
    `InvalidRequest` naming `calls`. A batch larger than the tenant's quota of calls not yet final
    could never be accepted, so that quota bounds a batch too. A body whose `calls` is not a
    list is left to the schema."""
    calls = body.get("calls") if isinstance(body, dict) else None
    if not isinstance(calls, list):
        return
    limit = min(policy.max_calls_per_batch, policy.max_queued_calls)
    if len(calls) > limit:
        name = "max_calls_per_batch" if limit == policy.max_calls_per_batch else "max_queued_calls"
        message = f"holds {len(calls)} calls; this account allows at most {limit} per batch ({name})"
        raise InvalidRequest(f"calls {message}", {"calls": [message]})


def build_batch(
    data: Mapping[str, Any],
    *,
    max_concurrency: int,
    voices: Mapping[str, object],
    destinations: DestinationPolicy = DEFAULT_DESTINATIONS,
    now: datetime | None = None,
) -> NewBatch:
    """The batch a request asks for, from the dict `api.schemas.load_batch_request` returned.

    Raises, in this order, the first that applies, with every problem of its kind in details:
    `InvalidPhoneNumber` (`calls[i].phone_number`: not valid in international form), `DestinationNotAllowed`
    (`calls[i].phone_number`: a valid number that `destinations` forbids: a country not allowed, or a blocked
    number type), both only with `invalid_numbers` `"reject"` (the default) or when every call would be
    skipped, `DuplicatePhoneNumber` (`calls[i].phone_number` repeating an earlier call's, unless `dedupe` is
    false; see `call_lists`), `InvalidScript` (`calls[i].script...` once its `variables` are filled in; an
    unknown `calls[i].voice_id`), `ConcurrencyLimit` (`concurrency` outside 1..max_concurrency; absent means
    min(10, max_concurrency)), `InvalidRequest` (`retry_config.<field>`; `expires_at`: not ISO 8601, without
    a UTC offset, or not after `now`, when `now` is given; `start_at`: not ISO 8601, without a UTC offset,
    or not before `expires_at`), then the calling windows' and the voicemails' (`domain.voicemail`). Numbers
    come out in E.164 form; a call's priority defaults to the batch's, then `DEFAULT_PRIORITY`."""
    return _build(data, max_concurrency, voices, destinations, now, whole=True)


def build_batch_part(
    data: Mapping[str, Any],
    *,
    max_concurrency: int,
    voices: Mapping[str, object],
    destinations: DestinationPolicy = DEFAULT_DESTINATIONS,
    now: datetime | None = None,
) -> NewBatch:
    """`build_batch` for a part of a list streamed in parts (a CSV's group of rows): the rules of
    the whole list, repeats (`call_lists.Repeats`) and a list of skipped calls only, are left to
    the streamer."""
    return _build(data, max_concurrency, voices, destinations, now, whole=False)


def _build(
    data: Mapping[str, Any],
    max_concurrency: int,
    voices: Mapping[str, object],
    destinations: DestinationPolicy,
    now: datetime | None,
    *,
    whole: bool,
) -> NewBatch:
    calls: Sequence[Mapping[str, Any]] = data["calls"]
    numbers, skipped = checked_numbers(calls, destinations, data.get("invalid_numbers", REJECT))
    if whole and len(skipped) == len(calls):
        raise nothing_to_call(list(skipped.values()))
    if whole and data.get("dedupe", True):
        refuse_repeats(numbers, skipped)
    scripts = _filled_scripts(calls, voices)
    concurrency = _concurrency(data, max_concurrency)
    retry = _retry_policy(data.get("retry_config"))
    expires_at = parse_expires_at(data.get("expires_at"), now)
    start_at = parse_start_at(data.get("start_at"), expires_at)
    window, own = requested_windows(data, calls)
    voicemail, own_voicemails = requested_voicemails(data, calls)
    priority: int = data.get("priority", DEFAULT_PRIORITY)
    return NewBatch(
        calls=tuple(
            NewCall(
                phone_number=number,
                script=normalize_script(script),
                voice_id=call.get("voice_id"),
                priority=call.get("priority", priority),
                calling_window=own_window,
                metadata=call.get("metadata"),
                variables=call.get("variables"),
                voicemail=own_voicemails[i],
                skipped=skipped.get(i) if skipped else None,
            )
            for i, (number, call, script, own_window) in enumerate(zip(numbers, calls, scripts, own, strict=True))
        ),
        concurrency=concurrency,
        retry=retry,
        callback_url=data.get("callback_url"),
        priority=priority,
        metadata=data.get("metadata"),
        expires_at=expires_at,
        start_at=start_at,
        calling_window=window,
        voicemail=voicemail,
    )
