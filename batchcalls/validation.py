"""What a submitted batch means: from the schema-checked request body to a `NewBatch`.

Pure: no I/O (the voice catalog is passed in). `build_batch` judges the values in a fixed order
(phone numbers, then scripts and voices, then concurrency, then retry_config) and raises the
first kind of error found, naming every problem of that kind in its details.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberDesc

from batchcalls.errors import ConcurrencyLimit, InvalidPhoneNumber, InvalidRequest, InvalidScript
from batchcalls.models import DEFAULT_CONCURRENCY, DEFAULT_PRIORITY, NewBatch, NewCall
from batchcalls.retry import RetryPolicy
from batchcalls.scripts import normalize_script, script_problems_by_path
from batchcalls.states import RETRYABLE_OUTCOMES

Details = dict[str, list[str]]

# --- Phone numbers -------------------------------------------------------------------------
#
# phonenumbers.parse + is_valid_number cost about 30 us a number: 3 s for a 100,000-call batch.
# Most numbers arrive as "+<digits>" and need none of parse's leniency, so they take a fast path
# that applies the library's own validity rules (its metadata: general description, then one of
# the number-type descriptions, each a possible-length set and a pattern) with the patterns
# compiled once. Whatever the fast path cannot decide exactly the way `parse` would (a national
# prefix that parse might strip, odd lengths, unknown country codes) goes to the library itself.
# tests/unit/test_validation.py checks the two agree on every region's example numbers.

_PHONE_SHAPE = re.compile(r"\+[0-9][0-9 ().-]*")
_PHONE_SEPARATORS = str.maketrans("", "", " ().-")
_NUMBER_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
_UNDECIDED = "undecided"


@dataclass(frozen=True)
class _Desc:
    lengths: frozenset[int]  # empty: any length
    pattern: str

    @classmethod
    def of(cls, desc: PhoneNumberDesc | None) -> _Desc | None:
        if desc is None or not desc.national_number_pattern:
            return None  # the library never matches a missing pattern
        return cls(frozenset(desc.possible_length or ()), desc.national_number_pattern)

    def allows(self, length: int) -> bool:
        return not self.lengths or length in self.lengths


class _Region:
    """One region's rule for a valid number, as phonenumbers' _number_type_helper applies it:
    the general description matches, and so does one of the number-type descriptions. For
    speed the rule becomes one pattern per number length, built on first use."""

    def __init__(self, metadata: PhoneMetadata) -> None:
        names = list(_NUMBER_TYPES)
        # As in _number_type_helper: mobile is tried only when its pattern differs from
        # fixed_line's.
        if not metadata.same_mobile_and_fixed_line_pattern:
            names.append("mobile")
        self.general = _Desc.of(metadata.general_desc)
        self.types = [desc for desc in map(_Desc.of, (getattr(metadata, n) for n in names)) if desc]
        self.leading_digits = re.compile(metadata.leading_digits) if metadata.leading_digits else None
        self._by_length: dict[int, re.Pattern[str] | None] = {}

    def _pattern(self, length: int) -> re.Pattern[str] | None:
        general, types = self.general, [t for t in self.types if t.allows(length)]
        if general is None or not general.allows(length) or not types:
            return None
        alternatives = "|".join(f"(?:{t.pattern})" for t in types)
        return re.compile(rf"(?=(?:{general.pattern})\Z)(?:{alternatives})")

    def is_valid(self, nsn: str) -> bool:
        length = len(nsn)
        try:
            pattern = self._by_length[length]
        except KeyError:
            pattern = self._by_length[length] = self._pattern(length)
        return pattern is not None and pattern.fullmatch(nsn) is not None


@dataclass(frozen=True)
class _CallingCode:
    national_prefix: re.Pattern[str] | None  # of the code's main region, as parse uses it
    regions: tuple[_Region, ...]

    def is_valid(self, nsn: str) -> bool:
        # phonenumbers.is_valid_number: the number's region is the code's only one, else the
        # first whose leading digits match or, lacking leading digits, for which it is valid.
        if len(self.regions) == 1:
            return self.regions[0].is_valid(nsn)
        for region in self.regions:
            if region.leading_digits is not None:
                if region.leading_digits.match(nsn):
                    return region.is_valid(nsn)
            elif region.is_valid(nsn):
                return True
        return False


@functools.cache
def _calling_code(code: int) -> _CallingCode:
    regions = []
    for region_code in COUNTRY_CODE_TO_REGION_CODE[code]:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, region_code)
        if metadata is not None:
            regions.append(_Region(metadata))
    main = PhoneMetadata.metadata_for_region_or_calling_code(code, COUNTRY_CODE_TO_REGION_CODE[code][0])
    prefix = main.national_prefix_for_parsing if main is not None else None
    return _CallingCode(re.compile(prefix) if prefix else None, tuple(regions))


def _fast_e164(digits: str) -> str | None:
    """`digits` (after the +) as E.164 when valid, None when not, `_UNDECIDED` when only
    phonenumbers.parse can tell."""
    if len(digits) < 4 or digits[0] == "0":
        return _UNDECIDED
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return _UNDECIDED
    nsn = digits[size:]
    if not 3 <= len(nsn) <= 17:
        return _UNDECIDED
    plan = _calling_code(code)
    if plan.national_prefix is not None and plan.national_prefix.match(nsn):
        return _UNDECIDED  # parse may strip it, depending on what is left
    return "+" + digits if plan.is_valid(nsn) else None


def _library_e164(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_phone_number(raw: str) -> str | None:
    """`raw` in E.164 form (`+442079460000`) when it is a valid number in international form,
    else None. Spaces, dashes, dots and brackets between the digits are ignored; letters,
    extensions and national forms (no leading +) are not accepted."""
    text = raw.strip()
    if not _PHONE_SHAPE.fullmatch(text):
        return None
    digits = text[1:].translate(_PHONE_SEPARATORS)
    e164 = _fast_e164(digits)
    return _library_e164("+" + digits) if e164 == _UNDECIDED else e164


def _phone_problem(raw: str) -> str:
    text = raw.strip()
    if not text.startswith("+"):
        return "must be in international E.164 form: + and the country code, like +14155552671"
    if not _PHONE_SHAPE.fullmatch(text):
        return "may hold only digits after the + (spaces, dashes, dots and brackets are ignored)"
    return "is not a valid phone number"


# --- The batch -----------------------------------------------------------------------------


def _phone_numbers(calls: Sequence[Mapping[str, Any]]) -> list[str]:
    numbers: list[str] = []
    problems: Details = {}
    for index, call in enumerate(calls):
        raw = call["phone_number"]
        e164 = normalize_phone_number(raw)
        if e164 is None:
            problems[f"calls[{index}].phone_number"] = [_phone_problem(raw)]
        else:
            numbers.append(e164)
    if problems:
        raise InvalidPhoneNumber(_summary("invalid phone number", problems), problems)
    return numbers


def _check_scripts(calls: Sequence[Mapping[str, Any]], voices: Mapping[str, object]) -> None:
    problems: Details = {}
    for index, call in enumerate(calls):
        prefix = f"calls[{index}].script"
        for path, messages in script_problems_by_path(call["script"]).items():
            problems[f"{prefix}.{path}" if path else prefix] = messages
        voice_id = call.get("voice_id")
        if voice_id is not None and voice_id not in voices:
            problems[f"calls[{index}].voice_id"] = [f"unknown voice {voice_id!r}; known: {', '.join(sorted(voices))}"]
    if problems:
        raise InvalidScript(_summary("invalid script", problems), problems)


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


def build_batch(data: Mapping[str, Any], *, max_concurrency: int, voices: Mapping[str, object]) -> NewBatch:
    """The batch a request asks for, from the dict `api.schemas.load_batch_request` returned.

    Raises, in this order, the first that applies, with every problem of its kind in details:
    `InvalidPhoneNumber` (`calls[i].phone_number`: not a valid number in international form),
    `InvalidScript` (`calls[i].script...`, `calls[i].voice_id` not in `voices`),
    `ConcurrencyLimit` (`concurrency` outside 1..max_concurrency; absent means
    min(10, max_concurrency)), `InvalidRequest` (`retry_config.<field>`).

    Phone numbers come out in E.164 form; a call's priority defaults to the batch's, which
    defaults to `DEFAULT_PRIORITY`.
    """
    calls: Sequence[Mapping[str, Any]] = data["calls"]
    numbers = _phone_numbers(calls)
    _check_scripts(calls, voices)
    concurrency = _concurrency(data, max_concurrency)
    retry = _retry_policy(data.get("retry_config"))
    priority: int = data.get("priority", DEFAULT_PRIORITY)
    return NewBatch(
        calls=tuple(
            NewCall(
                phone_number=number,
                script=normalize_script(call["script"]),
                voice_id=call.get("voice_id"),
                priority=call.get("priority", priority),
            )
            for number, call in zip(numbers, calls, strict=True)
        ),
        concurrency=concurrency,
        retry=retry,
        callback_url=data.get("callback_url"),
        priority=priority,
        metadata=data.get("metadata"),
    )
