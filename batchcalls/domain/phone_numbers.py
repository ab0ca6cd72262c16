"""Phone numbers: whether a raw number is valid in international form, and its E.164 form.

Pure: no I/O. Validity is phonenumbers' (with its metadata), sped up where it repeats work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers

from batchcalls.domain.destinations import warm_up as warm_up_destinations
from batchcalls.domain.errors import Details, InvalidPhoneNumber, summary

_PHONE_SHAPE = re.compile(r"\+[0-9][0-9 ().-]*")
_PHONE_SEPARATORS = str.maketrans("", "", " ().-")


def normalize_phone_number(raw: str) -> str | None:
    """`raw` in E.164 form (`+442079460000`) when it is a valid number in international form,
    else None. Spaces, dashes, dots and brackets between the digits are ignored; letters,
    extensions and national forms (no leading +) are not accepted. Validity is phonenumbers'
    (`is_valid_number` below gives its answer, faster): its rules change with its metadata,
    so they are not copied here."""
    parsed = parse_valid(raw)
    if parsed is None:
        return None
    return e164(parsed[0], parsed[2])


def e164(number: phonenumbers.PhoneNumber, national: str) -> str:
    # What phonenumbers.format_number(number, E164) returns, without its second computation of
    # the national number (a third of a microsecond a call, on the hot path of a submit).
    return f"+{number.country_code}{national}"


def parse_valid(raw: str) -> tuple[phonenumbers.PhoneNumber, str, str] | None:
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


def phone_problem(raw: str) -> str:
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
            invalid[f"{field}[{index}]"] = [phone_problem(raw) if isinstance(raw, str) else "not a string"]
        else:
            numbers.append(number)
    if invalid:
        raise InvalidPhoneNumber(summary("invalid phone number", invalid), invalid)
    return numbers
