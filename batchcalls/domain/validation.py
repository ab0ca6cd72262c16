"""What a submitted batch means: from the schema-checked request body to a `NewBatch`.

Pure: no I/O (the voice catalog is passed in). `build_batch` judges the values in a fixed order
(phone numbers, then scripts and voices, then concurrency, then retry_config) and raises the
first kind of error found, naming every problem of that kind in its details.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import phonenumbers

from batchcalls.domain.destinations import DestinationPolicy
from batchcalls.domain.destinations import warm_up as warm_up_destinations
from batchcalls.domain.errors import (
    ConcurrencyLimit,
    DestinationNotAllowed,
    InvalidPhoneNumber,
    InvalidRequest,
    InvalidScript,
)
from batchcalls.domain.models import DEFAULT_CONCURRENCY, DEFAULT_PRIORITY, NewBatch, NewCall
from batchcalls.domain.policy import Policy
from batchcalls.domain.retry import RetryPolicy
from batchcalls.domain.scripts import normalize_script
from batchcalls.domain.states import RETRYABLE_OUTCOMES
from batchcalls.domain.templates import fill_scripts
from batchcalls.domain.timefmt import parse_expires_at, parse_start_at
from batchcalls.domain.voicemail import requested_voicemails
from batchcalls.domain.window_requests import requested_windows

Details = dict[str, list[str]]

# The default settings' policy: premium-rate, shared-cost, personal and non-geographic numbers
# blocked, every country allowed.
DEFAULT_DESTINATIONS = DestinationPolicy()

# --- Phone numbers -------------------------------------------------------------------------

_PHONE_SHAPE = re.compile(r"\+[0-9][0-9 ().-]*")
_PHONE_SEPARATORS = str.maketrans("", "", " ().-")


def normalize_phone_number(raw: str) -> str | None:
    """`raw` in E.164 form (`+442079460000`) when it is a valid number in international form,
    else None. Spaces, dashes, dots and brackets between the digits are ignored; letters,
    extensions and national forms (no leading +) are not accepted. Validity is phonenumbers'
    (`is_valid_number` below gives its answer, faster): its rules change with its metadata,
    so they are not copied here."""
    parsed = _parse_valid(raw)
    if parsed is None:
        return None
    return _e164(parsed[0], parsed[2])


def _e164(number: phonenumbers.PhoneNumber, national: str) -> str:
    # What phonenumbers.format_number(number, E164) returns, without its second computation of
    # the national number (a third of a microsecond a call, on the hot path of a submit).
    return f"+{number.country_code}{national}"


def _parse_valid(raw: str) -> tuple[phonenumbers.PhoneNumber, str, str] | None:
    """(number, its region, its national significant number) when `raw` is a valid number in
    international form, else None."""
    text = raw.strip()
    if not _PHONE_SHAPE.fullmatch(text):
        return None
    try:
        number = phonenumbers.parse("+" + text[1:].translate(_PHONE_SEPARATORS), None)
    except phonenumbers.NumberParseException:
        return None
    national = phonenumbers.national_significant_number(number)
    region = valid_region(number, national)
    if region is None:
        return None
    return number, region, national


def is_valid_number(number: phonenumbers.PhoneNumber) -> bool:
    """`phonenumbers.is_valid_number`, faster (see `valid_region`)."""
    return valid_region(number, phonenumbers.national_significant_number(number)) is not None


def valid_region(number: phonenumbers.PhoneNumber, national: str) -> str | None:
    """The region of a valid number ("001" for a non-geographic one), None for an invalid one:
    `phonenumbers.is_valid_number` without its second look at the number's type.

    For a country code that several regions share (+1: the US, Canada and 23 more; +44: GB, GG,
    IM, JE), phonenumbers finds the number's region by checking its type against each region's
    rules in turn (or, for a region with `leading_digits`, by its first digits), then checks
    the type again against the region it found. The first check is the second one's answer
    when it matched, so here it is used as the answer: the same result (tests/unit/
    test_validation.py compares the two on every region's example numbers and their
    neighbours) for a third less of a ``+44`` number's validation. `national` is the number's
    national significant number."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(number.country_code or 0)
    if not regions:
        return None
    if len(regions) == 1:
        return regions[0] if phonenumbers.is_valid_number_for_region(number, regions[0]) else None
    for region in regions:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if re.match(metadata.leading_digits, national):
                return region if phonenumbers.is_valid_number_for_region(number, region) else None
        elif phonenumbers.is_valid_number_for_region(number, region):
            return region
    return None


def warm_up() -> None:
    """Compile every region's number patterns now (0.2 s, once per process) and keep them:
    phonenumbers compiles a region's regular expressions the first time it meets the region,
    which made an API process's first 400-call POST take 160 ms instead of 25, and left them to
    the `re` module's cache of 512 patterns, too few for a batch of numbers from many regions."""
    enable_cache = getattr(phonenumbers.re_util, "enable_pattern_cache", None)
    if enable_cache is not None:  # in the phonenumbers releases that have it
        enable_cache()
    for region in phonenumbers.SUPPORTED_REGIONS:
        example = phonenumbers.example_number(region)
        if example is not None:
            normalize_phone_number(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
    warm_up_destinations()


def _phone_problem(raw: str) -> str:
    text = raw.strip()
    if not text.startswith("+"):
        return "must be in international E.164 form: + and the country code, like +14155552671"
    if not _PHONE_SHAPE.fullmatch(text):
        return "may hold only digits after the + (spaces, dashes, dots and brackets are ignored)"
    return "is not a valid phone number"


def check_phone_numbers(raws: Sequence[object], field: str) -> list[str]:
    """Each of `raws` in E.164 form (as a call's number is normalised); raises
    `InvalidPhoneNumber` naming each one that is not a valid number as `field[i]`."""
    numbers: list[str] = []
    invalid: Details = {}
    for index, raw in enumerate(raws):
        number = normalize_phone_number(raw) if isinstance(raw, str) else None
        if number is None:
            invalid[f"{field}[{index}]"] = [_phone_problem(raw) if isinstance(raw, str) else "not a string"]
        else:
            numbers.append(number)
    if invalid:
        raise InvalidPhoneNumber(_summary("invalid phone number", invalid), invalid)
    return numbers


# --- The batch -----------------------------------------------------------------------------


def _phone_numbers(calls: Sequence[Mapping[str, Any]], destinations: DestinationPolicy) -> list[str]:
    numbers: list[str] = []
    invalid: Details = {}
    blocked: Details = {}
    for index, call in enumerate(calls):
        raw = call["phone_number"]
        parsed = _parse_valid(raw)
        if parsed is None:
            invalid[f"calls[{index}].phone_number"] = [_phone_problem(raw)]
            continue
        number, region, national = parsed
        problem = destinations.problem(number, region, national)
        if problem is not None:
            blocked[f"calls[{index}].phone_number"] = [problem]
        numbers.append(_e164(number, national))
    if invalid:
        raise InvalidPhoneNumber(_summary("invalid phone number", invalid), invalid)
    if blocked:
        raise DestinationNotAllowed(_summary("destination not allowed", blocked), blocked)
    return numbers


def _filled_scripts(calls: Sequence[Mapping[str, Any]], voices: Mapping[str, object]) -> list[Mapping[str, Any]]:
    scripts, problems = fill_scripts(calls)  # each call's variables filled in, then judged
    for index, call in enumerate(calls):
        voice_id = call.get("voice_id")
        if voice_id is not None and voice_id not in voices:
            problems[f"calls[{index}].voice_id"] = [f"unknown voice {voice_id!r}; known: {', '.join(sorted(voices))}"]
    if problems:
        raise InvalidScript(_summary("invalid script", problems), problems)
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
        raise InvalidRequest(_summary("invalid retry_config", problems), problems)
    try:
        return RetryPolicy.from_config(dict(config))
    except ValueError as e:
        raise InvalidRequest(f"invalid retry_config: {e}", {"retry_config": [str(e)]}) from e


def _summary(what: str, problems: Details) -> str:
    path, messages = next(iter(problems.items()))
    more = len(problems) - 1
    return f"{what}: {path}: {messages[0]}" + (f" (and {more} more; see details)" if more else "")


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
    number type), `InvalidScript` (`calls[i].script...` once its `variables` are filled in; an unknown
    `calls[i].voice_id`), `ConcurrencyLimit` (`concurrency` outside 1..max_concurrency; absent means
    min(10, max_concurrency)), `InvalidRequest` (`retry_config.<field>`; `expires_at`: not ISO 8601, without
    a UTC offset, or not after `now`, when `now` is given; `start_at`: not ISO 8601, without a UTC offset,
    or not before `expires_at`), then the calling windows' and the voicemails' (`domain.voicemail`). Numbers
    come out in E.164 form; a call's priority defaults to the batch's, then `DEFAULT_PRIORITY`."""
    calls: Sequence[Mapping[str, Any]] = data["calls"]
    numbers = _phone_numbers(calls, destinations)
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
