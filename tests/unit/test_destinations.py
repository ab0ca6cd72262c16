"""Toll fraud (issue 12, finding 11) and per-batch size (finding 8): a tenant's destination
policy and limits, as the core judges them (batchcalls.domain.destinations, batchcalls.domain.policy,
batchcalls.domain.validation), and their settings."""

from __future__ import annotations

from typing import Any
from unittest import mock

import phonenumbers
import pytest

from api.schemas import load_batch_request
from batchcalls.domain import validation
from batchcalls.domain.destinations import (
    DEFAULT_BLOCKED_TYPES,
    SPECIAL_TYPES,
    DestinationPolicy,
    parse_countries,
    parse_number_types,
    special_type,
)
from batchcalls.domain.errors import DestinationNotAllowed, InvalidPhoneNumber, InvalidRequest
from batchcalls.domain.policy import Policy, TenantPolicy
from batchcalls.domain.validation import build_batch, check_call_count
from config.settings import load_settings

VOICES: dict[str, object] = {}
UK_LANDLINE, US = "+442079460000", "+14155552671"
US_PREMIUM = "+19002345678"  # +1 900
UK_PREMIUM = "+449012345678"  # 09
UK_PERSONAL = "+447012345678"  # 070: charged like premium rate, looks like a mobile
FR_SHARED_COST = "+33884012345"
SATELLITE = "+881612345678"  # Iridium and other GMSS
INMARSAT = "+870301234567"
INTERNATIONAL_NETWORKS = ("+8823421234", "+883510012345")
UK_TOLL_FREE, UK_UAN, UK_VOIP = "+448001234567", "+445512345678", "+445612345678"
DE = "+4930123456"


def body(*numbers: str) -> dict[str, Any]:
    return {"calls": [{"phone_number": n, "script": {"text": "Hello."}} for n in numbers]}


def build(*numbers: str, destinations: DestinationPolicy | None = None) -> list[str]:
    data = load_batch_request(body(*numbers))
    if destinations is None:  # the product's default policy
        batch = build_batch(data, max_concurrency=10, voices=VOICES)
    else:
        batch = build_batch(data, max_concurrency=10, voices=VOICES, destinations=destinations)
    return [call.phone_number for call in batch.calls]


def refused(*numbers: str, destinations: DestinationPolicy | None = None) -> dict[str, list[str]]:
    with pytest.raises(DestinationNotAllowed) as excinfo:
        build(*numbers, destinations=destinations)
    assert excinfo.value.code == "destination_not_allowed"
    assert excinfo.value.http_status == 422
    details: dict[str, list[str]] = excinfo.value.details
    return details


@pytest.mark.parametrize(
    "number, kind",
    [
        (US_PREMIUM, "premium_rate"),
        (UK_PREMIUM, "premium_rate"),
        (FR_SHARED_COST, "shared_cost"),
        (UK_PERSONAL, "personal_number"),
        (SATELLITE, "non_geographic"),
        (INMARSAT, "non_geographic"),
        (INTERNATIONAL_NETWORKS[0], "non_geographic"),
        (INTERNATIONAL_NETWORKS[1], "non_geographic"),
    ],
)
def test_costly_destinations_are_refused_by_default_naming_the_call_and_the_reason(number: str, kind: str) -> None:
    assert phonenumbers.is_valid_number(phonenumbers.parse(number))  # valid: refused by policy, not as invalid
    details = refused(UK_LANDLINE, number)
    assert list(details) == ["calls[1].phone_number"]
    assert kind in details["calls[1].phone_number"][0]


def test_ordinary_destinations_pass_the_default_policy() -> None:
    numbers = [UK_LANDLINE, US, DE, UK_TOLL_FREE, UK_UAN, UK_VOIP, "+447400123456"]
    assert build(*numbers) == numbers


def test_invalid_numbers_are_reported_before_blocked_ones() -> None:
    with pytest.raises(InvalidPhoneNumber) as excinfo:
        build(US_PREMIUM, "+1234567890")
    assert list(excinfo.value.details) == ["calls[1].phone_number"]


def test_every_blocked_number_is_named() -> None:
    details = refused(US_PREMIUM, UK_LANDLINE, SATELLITE, UK_PERSONAL)
    assert list(details) == ["calls[0].phone_number", "calls[2].phone_number", "calls[3].phone_number"]
    assert "+881: satellite" in details["calls[2].phone_number"][0]


def test_allowed_countries_admit_only_those_countries_and_no_non_geographic_number() -> None:
    only_us_gb = DestinationPolicy(frozenset({"US", "GB"}), frozenset())
    assert build(US, UK_LANDLINE, US_PREMIUM, destinations=only_us_gb) == [US, UK_LANDLINE, US_PREMIUM]
    details = refused(US, DE, SATELLITE, "+441534456789", destinations=only_us_gb)  # Jersey is JE, not GB
    assert list(details) == ["calls[1].phone_number", "calls[2].phone_number", "calls[3].phone_number"]
    assert "is in DE" in details["calls[1].phone_number"][0] and "GB, US" in details["calls[1].phone_number"][0]
    assert "is in JE" in details["calls[3].phone_number"][0]


def test_a_policy_blocking_nothing_calls_premium_and_satellite_numbers() -> None:
    anything = DestinationPolicy(frozenset(), frozenset())
    assert build(US_PREMIUM, SATELLITE, UK_PERSONAL, destinations=anything) == [US_PREMIUM, SATELLITE, UK_PERSONAL]


def test_other_types_can_be_blocked() -> None:
    strict = DestinationPolicy(frozenset(), frozenset({"toll_free", "uan", "voip"}))
    details = refused(UK_TOLL_FREE, UK_UAN, UK_VOIP, UK_LANDLINE, US_PREMIUM, destinations=strict)
    assert list(details) == [f"calls[{i}].phone_number" for i in range(3)]


def test_special_type_agrees_with_phonenumbers_on_every_regions_examples() -> None:
    """The cheap type check gives phonenumbers' own answer for every region's example number of
    every type, and for the non-geographic ones."""
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in phonenumbers.PhoneNumberType.values()
    ]
    examples += [
        phonenumbers.example_number_for_non_geo_entity(cc)
        for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    ]
    names = {getattr(phonenumbers.PhoneNumberType, kind.upper()): kind for kind in SPECIAL_TYPES}
    checked = special = 0
    for example in examples:
        if example is None or not phonenumbers.is_valid_number(example):
            continue
        national = phonenumbers.national_significant_number(example)
        region = validation.valid_region(example, national)
        assert region == phonenumbers.region_code_for_number(example)
        expected = names.get(phonenumbers.number_type(example))
        e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        assert special_type(example, region, national) == expected, e164
        assert validation.normalize_phone_number(e164) == e164
        checked += 1
        special += expected is not None
    assert checked > 1_000 and special > 300


def test_names_are_checked() -> None:
    assert parse_number_types([" Premium_Rate", "", "premium_rate", "uan"]) == ("premium_rate", "uan")
    with pytest.raises(ValueError, match="unknown number type premium"):
        parse_number_types(["premium"])
    assert parse_countries(["us", " gb ", "US"]) == ("US", "GB")
    with pytest.raises(ValueError, match="UK.*GB"):
        parse_countries(["UK"])
    with pytest.raises(ValueError):
        DestinationPolicy(frozenset({"XX"}))


def test_settings_give_the_safe_default_and_refuse_unknown_names() -> None:
    defaults = load_settings({}).tenant_defaults
    assert defaults == Policy(100_000, 100_000, (), DEFAULT_BLOCKED_TYPES)
    assert set(DEFAULT_BLOCKED_TYPES) == {"premium_rate", "shared_cost", "personal_number", "non_geographic"}
    custom = load_settings(
        {
            "BATCHCALLS_TENANT_MAX_QUEUED_CALLS": "50",
            "BATCHCALLS_MAX_CALLS_PER_BATCH": "20",
            "BATCHCALLS_ALLOWED_COUNTRIES": "us, gb",
            "BATCHCALLS_BLOCKED_NUMBER_TYPES": "none",
        }
    )
    assert custom.tenant_defaults == Policy(50, 20, ("US", "GB"), ())
    # Empty is the default, as for every setting (a compose file passing an unset variable as
    # empty must not unblock anything).
    empty = load_settings({"BATCHCALLS_ALLOWED_COUNTRIES": "", "BATCHCALLS_BLOCKED_NUMBER_TYPES": " "})
    assert empty.tenant_defaults == defaults
    assert load_settings({"BATCHCALLS_BLOCKED_NUMBER_TYPES": "premium_rate,uan"}).blocked_number_types == (
        "premium_rate",
        "uan",
    )
    with pytest.raises(ValueError, match="BATCHCALLS_BLOCKED_NUMBER_TYPES"):
        load_settings({"BATCHCALLS_BLOCKED_NUMBER_TYPES": "premium"})
    with pytest.raises(ValueError, match="BATCHCALLS_ALLOWED_COUNTRIES"):
        load_settings({"BATCHCALLS_ALLOWED_COUNTRIES": "UK"})
    with pytest.raises(ValueError, match="BATCHCALLS_MAX_CALLS_PER_BATCH"):
        load_settings({"BATCHCALLS_MAX_CALLS_PER_BATCH": "0"})


def test_a_tenants_own_values_replace_the_defaults() -> None:
    defaults = Policy(100, 50, (), DEFAULT_BLOCKED_TYPES)
    assert TenantPolicy().over(defaults) is defaults
    own = TenantPolicy(max_queued_calls=1_000, allowed_countries=("US",), blocked_number_types=())
    assert own.over(defaults) == Policy(1_000, 50, ("US",), ())
    assert own.overridden() == ["max_queued_calls", "allowed_countries", "blocked_number_types"]
    assert own.over(defaults).destinations == DestinationPolicy(frozenset({"US"}), frozenset())


def test_a_batch_over_the_per_batch_limit_is_refused_naming_calls_before_any_call_is_looked_at() -> None:
    policy = Policy(max_queued_calls=1_000, max_calls_per_batch=100)
    check_call_count({"calls": [{}] * 100}, policy)
    with pytest.raises(InvalidRequest) as excinfo:
        check_call_count({"calls": ["not a call"] * 101}, policy)  # the calls themselves are never read
    assert type(excinfo.value) is InvalidRequest and excinfo.value.http_status == 422
    assert list(excinfo.value.details) == ["calls"]
    assert "101" in excinfo.value.message and "100" in excinfo.value.message
    assert "max_calls_per_batch" in excinfo.value.details["calls"][0]
    # A batch larger than the tenant's whole quota could never be accepted: refused the same way.
    with pytest.raises(InvalidRequest) as excinfo:
        check_call_count({"calls": [{}] * 60}, Policy(max_queued_calls=50, max_calls_per_batch=100))
    assert "max_queued_calls" in excinfo.value.details["calls"][0]
    for not_a_batch in (None, [], {"calls": "many"}, {"calls": {"0": {}}}):
        check_call_count(not_a_batch, policy)  # left to the schema, which names what is wrong


def test_warm_up_leaves_no_type_pattern_to_compile_on_a_request() -> None:
    validation.warm_up()
    strict = DestinationPolicy(frozenset(), frozenset(SPECIAL_TYPES))
    with mock.patch("re.compile", side_effect=AssertionError("compiled during a request")):
        refused(US_PREMIUM, UK_TOLL_FREE, UK_UAN, "+61212345678", destinations=strict)


VONAGE = {"BATCHCALLS_PROVIDER": "vonage", "VONAGE_SIGNATURE_SECRET": "s" * 40}


@pytest.mark.parametrize(
    ("from_number", "country"),
    [
        ("+447700900001", "GB"),
        ("447700900001", "GB"),
        ("+1 212 555 0100", "US"),
        ("+15550100123", "US"),
        ("+33123456789", "FR"),
        ("+61 2 9374 4000", "AU"),
    ],
)
def test_under_vonage_the_default_countries_are_the_caller_ids(from_number: str, country: str) -> None:
    settings = load_settings({**VONAGE, "VONAGE_FROM_NUMBER": from_number})
    assert settings.allowed_countries == (country,)
    assert settings.tenant_defaults.allowed_countries == (country,)


def test_the_default_countries_refuse_abroad_under_vonage_and_allow_every_country_otherwise() -> None:
    home = load_settings({**VONAGE, "VONAGE_FROM_NUMBER": "+447700900001"}).tenant_defaults
    assert build(UK_LANDLINE, destinations=home.destinations) == [UK_LANDLINE]
    details = refused(UK_LANDLINE, US, DE, destinations=home.destinations)
    assert details == {
        "calls[1].phone_number": ["is in US; this account may call only GB"],
        "calls[2].phone_number": ["is in DE; this account may call only GB"],
    }
    for env in (
        {**VONAGE, "VONAGE_FROM_NUMBER": "+447700900001", "BATCHCALLS_ALLOWED_COUNTRIES": "all"},
        {**VONAGE, "VONAGE_FROM_NUMBER": "+447700900001", "BATCHCALLS_ALLOWED_COUNTRIES": " ALL "},
        {},
        {"BATCHCALLS_PROVIDER": "simulator"},
    ):
        settings = load_settings(env)
        assert settings.allowed_countries == ()
        assert build(US, DE, UK_LANDLINE, destinations=settings.tenant_defaults.destinations) == [US, DE, UK_LANDLINE]
    listed = load_settings({**VONAGE, "VONAGE_FROM_NUMBER": "+447700900001", "BATCHCALLS_ALLOWED_COUNTRIES": "us,ie"})
    assert listed.allowed_countries == ("US", "IE")
    # A tenant's own countries replace the default either way; empty is every country.
    assert build(US, destinations=TenantPolicy(allowed_countries=("US",)).over(home).destinations) == [US]
    assert build(US, DE, destinations=TenantPolicy(allowed_countries=()).over(home).destinations) == [US, DE]
    assert TenantPolicy(max_queued_calls=5).over(home).allowed_countries == ("GB",)


@pytest.mark.parametrize("from_number", ["", "Acme", "+881612345678", "+999"])
def test_vonage_with_a_caller_id_of_no_country_needs_the_countries_set(from_number: str) -> None:
    with pytest.raises(ValueError, match="BATCHCALLS_ALLOWED_COUNTRIES"):
        load_settings({**VONAGE, "VONAGE_FROM_NUMBER": from_number})
    assert load_settings(
        {**VONAGE, "VONAGE_FROM_NUMBER": from_number, "BATCHCALLS_ALLOWED_COUNTRIES": "GB"}
    ).allowed_countries == ("GB",)
