"""A call's `variables` filled into its script (batchcalls.domain.templates), and how a request
with them is judged (api.schemas, batchcalls.domain.validation)."""

from __future__ import annotations

from typing import Any

import pytest

from api.schemas import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, load_batch_request
from batchcalls.domain.errors import InvalidRequest, InvalidScript
from batchcalls.domain.scripts import MAX_TEXT_CHARS
from batchcalls.domain.templates import (
    MAX_NAME_CHARS,
    MAX_VALUE_CHARS,
    MAX_VARIABLES,
    fill_script,
    placeholders,
    render,
    variables_problems,
)
from batchcalls.domain.validation import build_batch
from batchcalls.domain.voices import voice_catalog

# --- render ---------------------------------------------------------------------------------


def test_a_placeholder_takes_its_variable_and_whitespace_inside_the_braces_is_allowed() -> None:
    assert render("Hello {{name}}, {{ name }}, {{\tname\n}}!", {"name": "Ada"}) == ("Hello Ada, Ada, Ada!", [])


def test_a_default_is_used_only_without_the_variable() -> None:
    text = "Hello {{name|there}}, {{ name | my friend }}."
    assert render(text, {}) == ("Hello there, my friend.", [])
    assert render(text, {"name": "Ada"}) == ("Hello Ada, Ada.", [])
    assert render("Hi{{name|}}.", {}) == ("Hi.", [])  # an empty default: nothing
    assert render("Hello {{name|there}}", {"name": ""}) == ("Hello ", [])  # a given empty value is a value


def test_a_missing_variable_without_default_is_named_once_in_order_of_first_use() -> None:
    text, missing = render("{{b}} {{a}} {{b}} {{c|x}}", {})
    assert missing == ["b", "a"]
    assert text == "{{b}} {{a}} {{b}} x"


def test_a_repeated_placeholder_is_filled_everywhere() -> None:
    assert render("{{x}}-{{x}}-{{ x }}", {"x": "7"}) == ("7-7-7", [])


def test_values_are_spoken_as_json_spells_them() -> None:
    assert render("{{s}} {{i}} {{f}} {{t}} {{n}}", {"s": "a", "i": 3, "f": 2.5, "t": True, "n": False}) == (
        "a 3 2.5 true false",
        [],
    )


@pytest.mark.parametrize(
    "text",
    [
        "{% if user.admin %}yes{% endif %}",
        "${name}",
        "{name}",
        "{{7*7}}",
        "{{ x.__init__ }}",
        "{{ x.__class__.__mro__ }}",
        "{{ name() }}",
        "{{ ''.join('a') }}",
        "{{ 1name }}",
        "{{ na me }}",
        "{{name|de{fault}}",
        "{#comment#}",
    ],
)
def test_what_is_not_a_placeholder_stays_literal_text(text: str) -> None:
    variables = {"name": "EVALUATED", "x": "EVALUATED", "user": "EVALUATED"}
    assert placeholders(text) == []
    assert render(text, variables) == (text, [])


def test_a_dunder_name_is_only_a_variable_name_without_a_value() -> None:
    assert render("{{__class__}} {{ __globals__ }}", {}) == (
        "{{__class__}} {{ __globals__ }}",
        ["__class__", "__globals__"],
    )
    # With a value of that name it is filled like any other: nothing is looked up on an object.
    assert render("{{__class__}}", {"__class__": "plain"}) == ("plain", [])


def test_a_value_holding_a_placeholder_is_not_filled_again() -> None:
    variables = {"name": "{{secret}} {{name}}", "secret": "LEAKED"}
    assert render("Hi {{name}}", variables) == ("Hi {{secret}} {{name}}", [])
    # Nor does a value holding a placeholder's missing variable count as missing.
    assert render("{{a}}", {"a": "{{b}}"}) == ("{{b}}", [])


def test_nested_braces_fill_only_the_innermost_placeholder_once() -> None:
    assert render("{{{name}}}", {"name": "Ada"}) == ("{Ada}", [])
    assert render("{{{{name}}}}", {"name": "Ada"}) == ("{{Ada}}", [])
    # A default cannot hold braces: the outer text is literal, the inner placeholder is filled.
    assert render("{{a|{{b}}}}", {"b": "x"}) == ("{{a|x}}", [])


def test_names_are_limited_in_length() -> None:
    long_name = "n" * (MAX_NAME_CHARS + 1)
    assert placeholders("{{" + "n" * MAX_NAME_CHARS + "}}") == [("n" * MAX_NAME_CHARS, None)]
    assert render("{{" + long_name + "}}", {long_name: "x"}) == ("{{" + long_name + "}}", [])


# --- variables ------------------------------------------------------------------------------


def test_variables_problems_name_each_bad_variable() -> None:
    problems = variables_problems(
        {
            "ok": "fine",
            "n": 3,
            "first name": "x",
            "1st": "x",
            "obj": {"a": 1},
            "none": None,
            "list": [1],
            "long": "x" * (MAX_VALUE_CHARS + 1),
            "edge": "x" * MAX_VALUE_CHARS,
        }
    )
    assert set(problems) == {"first name", "1st", "obj", "none", "list", "long"}
    assert problems["long"] == [f"must be at most {MAX_VALUE_CHARS} characters (it has {MAX_VALUE_CHARS + 1})"]
    assert problems["obj"] == ["must be a string, a number or a boolean"]
    assert "is not a variable name" in problems["first name"][0]


def test_too_many_variables_is_one_problem_of_the_object() -> None:
    assert variables_problems({f"v{i}": i for i in range(MAX_VARIABLES)}) == {}
    problems = variables_problems({f"v{i}": i for i in range(MAX_VARIABLES + 1)})
    assert problems == {"": [f"must hold at most {MAX_VARIABLES} variables (it has {MAX_VARIABLES + 1})"]}


# --- fill_script --------------------------------------------------------------------------


def test_fill_script_fills_every_text_and_leaves_other_fields_and_the_original_alone() -> None:
    script = {
        "type": "{{kind}}",
        "steps": [
            {"text": "Hi {{name}}"},
            {"type": "input", "dtmf": True, "name": "{{name}}"},
            {"type": "text", "text": "Bye"},
        ],
    }
    filled, problems = fill_script(script, {"name": "Ada", "kind": "x"})
    assert problems == {}
    assert filled == {
        "type": "{{kind}}",
        "steps": [
            {"text": "Hi Ada"},
            {"type": "input", "dtmf": True, "name": "{{name}}"},
            {"type": "text", "text": "Bye"},
        ],
    }
    assert script["steps"][0] == {"text": "Hi {{name}}"}
    assert fill_script({"text": "Hi {{name}}"}, {"name": "Bo"}) == ({"text": "Hi Bo"}, {})


def test_a_script_with_nothing_to_fill_is_returned_as_it_is() -> None:
    script = {"steps": [{"text": "Hello"}]}
    filled, problems = fill_script(script, {"unused": "x"})
    assert filled is script and problems == {}


def test_fill_script_names_the_text_and_the_missing_variable() -> None:
    _, problems = fill_script({"steps": [{"text": "Hi"}, {"text": "Dear {{first_name}}, {{x}}"}]}, {"x": 1})
    assert problems == {
        "steps[1].text": ["has {{first_name}} but the call has no variable 'first_name' and the placeholder no default"]
    }


def test_a_filled_text_is_held_to_the_limits_of_literal_text() -> None:
    literal_room = MAX_TEXT_CHARS - len("Hi ")
    _, problems = fill_script({"steps": [{"text": "Hi {{a}}{{b}}"}]}, {"a": "x" * 1000, "b": "y" * literal_room})
    over = 3 + 1000 + literal_room
    assert problems == {
        "steps[0].text": [
            f"must be at most {MAX_TEXT_CHARS} characters (it has {over} after its variables were filled in)"
        ]
    }
    _, problems = fill_script({"text": "{{blank}}"}, {"blank": "  "})
    assert problems == {"text": ["must not be empty (after its variables were filled in)"]}
    # The other problems of the script are judged as before, beside the missing variable.
    _, problems = fill_script({"steps": [{"type": "dance"}, {"text": "{{x}}"}]}, {})
    assert set(problems) == {"steps[0].type", "steps[1].text"}


# --- the request ------------------------------------------------------------------------------


def _build(*calls: dict[str, Any]) -> Any:
    return build_batch(load_batch_request({"calls": list(calls)}), max_concurrency=10, voices=voice_catalog())


def test_a_call_is_stored_with_its_script_filled_and_its_data() -> None:
    batch = _build(
        {
            "phone_number": "+442079460000",
            "script": {"type": "reminder", "steps": [{"text": "Hi {{name|there}}, you owe {{amount}}."}]},
            "variables": {"amount": 12.5},
            "metadata": {"crm_id": "c-1", "tags": ["a"]},
        },
        {"phone_number": "+442079460001", "script": {"text": "Plain"}},
    )
    first, second = batch.calls
    assert first.script == {"type": "reminder", "steps": [{"type": "text", "text": "Hi there, you owe 12.5."}]}
    assert first.metadata == {"crm_id": "c-1", "tags": ["a"]} and first.variables == {"amount": 12.5}
    assert second.metadata is None and second.variables is None


def test_a_missing_variable_is_an_invalid_script_naming_call_step_and_variable() -> None:
    ok = {"phone_number": "+442079460000", "script": {"text": "Hi"}}
    bad = {"phone_number": "+442079460001", "script": {"steps": [{"text": "Hi"}, {"text": "{{__class__}}"}]}}
    with pytest.raises(InvalidScript) as excinfo:
        _build(ok, bad)
    assert excinfo.value.details == {
        "calls[1].script.steps[1].text": [
            "has {{__class__}} but the call has no variable '__class__' and the placeholder no default"
        ]
    }


def test_a_too_long_filled_text_names_its_path_and_length() -> None:
    call = {
        "phone_number": "+442079460000",
        "script": {"text": "{{a}}{{b}}"},
        "variables": {"a": "x" * 1000, "b": "y" * 612},
    }
    with pytest.raises(InvalidScript) as excinfo:
        _build(call)
    assert excinfo.value.details == {
        "calls[0].script.text": [
            f"must be at most {MAX_TEXT_CHARS} characters (it has 1612 after its variables were filled in)"
        ]
    }


@pytest.mark.parametrize(
    ("field", "value", "path", "message"),
    [
        ("variables", [1], "calls[0].variables", "Not a valid mapping type."),
        ("variables", {"a b": "x"}, "calls[0].variables.a b", "is not a variable name"),
        ("variables", {"x": None}, "calls[0].variables.x", "must be a string, a number or a boolean"),
        ("variables", {"x": "v" * (MAX_VALUE_CHARS + 1)}, "calls[0].variables.x", "must be at most"),
        ("variables", {f"v{i}": 1 for i in range(MAX_VARIABLES + 1)}, "calls[0].variables", "at most"),
        ("metadata", "crm", "calls[0].metadata", "Not a valid mapping type."),
        ("metadata", {"a": "x" * MAX_METADATA_BYTES}, "calls[0].metadata", f"at most {MAX_METADATA_BYTES} bytes"),
        ("metadata", {"a": [[[[[[[[[]]]]]]]]]}, "calls[0].metadata", f"at most {MAX_METADATA_DEPTH} deep"),
    ],
)
def test_bad_call_data_is_an_invalid_request_naming_the_field(field: str, value: Any, path: str, message: str) -> None:
    call = {"phone_number": "+442079460000", "script": {"text": "Hi"}, field: value}
    with pytest.raises(InvalidRequest) as excinfo:
        load_batch_request({"calls": [call]})
    assert not isinstance(excinfo.value, InvalidScript)
    details = excinfo.value.details
    assert details is not None and list(details) == [path], details
    assert message in details[path][0]


def test_call_metadata_fits_the_batch_limit_exactly() -> None:
    # {"a":"..."} is 8 bytes around the value.
    metadata = {"a": "x" * (MAX_METADATA_BYTES - 8)}
    data = load_batch_request(
        {"calls": [{"phone_number": "+442079460000", "script": {"text": "Hi"}, "metadata": metadata}]}
    )
    assert data["calls"][0]["metadata"] == metadata
