"""Where a tenant may call: allowed destination countries and blocked number types (toll fraud).

Pure: no I/O. A number is judged after it was found valid, with the region its validation found
(`batchcalls.domain.validation`), so the region is not looked up twice. Number types are phonenumbers'
`PhoneNumberType`s, named in lower case, plus `non_geographic`: every number of the
non-geographic "001" region (+800, +808, +870, +878, +881, +882, +883, +888, +979: satellite
phones, international networks and other global services, none of them a country).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import phonenumbers

NON_GEOGRAPHIC = "non_geographic"
NON_GEO_REGION = "001"

# The special types in the order phonenumbers tests them when it gives a number its type (a
# number matching two of them has the first one's type), with their PhoneMetadata attribute.
# Fixed-line and mobile numbers are what a batch calls; they cannot be blocked.
SPECIAL_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail")
BLOCKABLE_TYPES = (*SPECIAL_TYPES, NON_GEOGRAPHIC)
# Premium-rate and shared-cost numbers charge the caller more than a call costs and pay part of
# it to the number's holder; personal numbers (the UK's 070) are charged like premium-rate
# numbers and look like mobiles; non-geographic numbers include satellite phones (+881, +870),
# which cost several dollars a minute. Toll-free, UAN (the UK's 03, charged as a landline) and
# VoIP numbers are ordinary destinations and stay callable unless a tenant blocks them.
DEFAULT_BLOCKED_TYPES = ("premium_rate", "shared_cost", "personal_number", NON_GEOGRAPHIC)

# What each non-geographic country code is (ITU-T E.164 assignments), for the error message.
NON_GEOGRAPHIC_SERVICES = {
    800: "international freephone",
    808: "international shared cost",
    870: "Inmarsat satellite",
    878: "universal personal telecommunications",
    881: "satellite (GMSS)",
    882: "international networks",
    883: "international networks",
    888: "humanitarian (OCHA)",
    979: "international premium rate",
}


def parse_number_types(values: Iterable[str]) -> tuple[str, ...]:
    """Blockable type names, lower-cased and deduplicated in order. Raises ValueError naming
    each unknown one."""
    names = tuple(dict.fromkeys(value.strip().lower() for value in values if value.strip()))
    unknown = [name for name in names if name not in BLOCKABLE_TYPES]
    if unknown:
        raise ValueError(f"unknown number type {', '.join(unknown)}; known: {', '.join(BLOCKABLE_TYPES)}")
    return names


def parse_countries(values: Iterable[str]) -> tuple[str, ...]:
    """ISO 3166-1 alpha-2 region codes that have phone numbers, upper-cased and deduplicated in
    order. Raises ValueError naming each unknown one."""
    codes = tuple(dict.fromkeys(value.strip().upper() for value in values if value.strip()))
    unknown = [code for code in codes if code not in phonenumbers.SUPPORTED_REGIONS]
    if unknown:
        hint = " (the United Kingdom is GB)" if "UK" in unknown else ""
        raise ValueError(
            f"not a country code with phone numbers: {', '.join(unknown)}{hint};"
            " use ISO 3166-1 alpha-2 codes such as US, GB, DE"
        )
    return codes


def caller_region(number: str | None) -> str | None:
    """The country (ISO 3166-1 alpha-2 region) of a caller id such as `+447700900000` (the "+"
    may be left out, as Vonage writes numbers), None when it names none: unreadable, or a
    non-geographic number. A number phonenumbers cannot place in one region of its country
    code (a fictional or unassigned one) is in the country code's main region (+1: US)."""
    digits = re.sub(r"[\s().-]", "", number or "")
    try:
        parsed = phonenumbers.parse(digits if digits.startswith("+") else "+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code or 0
    )
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


@dataclass(frozen=True)
class DestinationPolicy:
    """`allowed_countries` empty: every country. Build it with parsed values (`parse_countries`,
    `parse_number_types`); the constructor checks them again."""

    allowed_countries: frozenset[str] = frozenset()
    blocked_types: frozenset[str] = frozenset(DEFAULT_BLOCKED_TYPES)
    _last_special: int = field(init=False, repr=False, compare=False, default=-1)

    def __post_init__(self) -> None:
        parse_countries(self.allowed_countries)
        parse_number_types(self.blocked_types)
        object.__setattr__(self, "_last_special", last_special_index(self.blocked_types))

    def problem(self, number: phonenumbers.PhoneNumber, region: str, national: str) -> str | None:
        """Why this valid number may not be called (None: it may). `region` is the region its
        validation found ("001" for a non-geographic number), `national` its national
        significant number."""
        if region == NON_GEO_REGION:
            if NON_GEOGRAPHIC in self.blocked_types:
                service = NON_GEOGRAPHIC_SERVICES.get(number.country_code or 0, "global service")
                return (
                    f"is a non-geographic number (+{number.country_code}: {service});"
                    " number type non_geographic is blocked for this account"
                )
            if self.allowed_countries:
                return "is a non-geographic number, in none of the countries this account may call"
        elif self.allowed_countries and region not in self.allowed_countries:
            return f"is in {region}; this account may call only {', '.join(sorted(self.allowed_countries))}"
        kind = special_type(number, region, national, self._last_special) if self._last_special >= 0 else None
        if kind is not None and kind in self.blocked_types:
            return f"is a {kind} number; number type {kind} is blocked for this account"
        return None


# A region's special-type descriptions that have numbers, in SPECIAL_TYPES order: (index in
# SPECIAL_TYPES, type, possible lengths, compiled pattern). Keyed by region, or "001:<country
# code>" for a non-geographic one. Filled at warm-up and on first use; bounded by the metadata.
_Desc = tuple[int, str, frozenset[int], re.Pattern[str]]
_descs: dict[str, tuple[_Desc, ...]] = {}


def _descs_of(region: str, country_code: int) -> tuple[_Desc, ...]:
    key = f"{NON_GEO_REGION}:{country_code}" if region == NON_GEO_REGION else region
    found = _descs.get(key)
    if found is not None:
        return found
    if region == NON_GEO_REGION:
        metadata = phonenumbers.PhoneMetadata.metadata_for_nongeo_region(country_code, None)
    else:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    descs = []
    for index, kind in enumerate(SPECIAL_TYPES):
        desc = getattr(metadata, kind, None) if metadata is not None else None
        if desc is not None and desc.national_number_pattern:
            descs.append((index, kind, frozenset(desc.possible_length), re.compile(desc.national_number_pattern)))
    _descs[key] = found = tuple(descs)
    return found


def last_special_index(kinds: frozenset[str]) -> int:
    """The position in SPECIAL_TYPES of the last of `kinds` (-1: none of them is special)."""
    return max((SPECIAL_TYPES.index(kind) for kind in kinds if kind in SPECIAL_TYPES), default=-1)


def special_type(
    number: phonenumbers.PhoneNumber, region: str, national: str, up_to: int = len(SPECIAL_TYPES) - 1
) -> str | None:
    """The special type (`SPECIAL_TYPES`) phonenumbers gives this valid number, or None for a
    fixed-line or mobile number; only the types up to `SPECIAL_TYPES[up_to]` are looked at
    (a number of a later special type comes back as None). The same answer as
    `phonenumbers.number_type` (tests/unit/test_destinations.py compares them on every region's
    example numbers), at the cost of the few patterns it needs."""
    length = len(national)
    for index, kind, lengths, pattern in _descs_of(region, number.country_code or 0):
        if index > up_to:
            break
        # phonenumbers: an empty list of possible lengths means the general description's.
        if (not lengths or length in lengths) and pattern.fullmatch(national):
            return kind
    return None


def warm_up() -> None:
    """Compile every region's special-type patterns now, not on a request (see
    `batchcalls.domain.validation.warm_up`)."""
    for region in phonenumbers.SUPPORTED_REGIONS:
        _descs_of(region, 0)
    for country_code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        _descs_of(NON_GEO_REGION, country_code)
