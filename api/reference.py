"""The reference page's content, read from the OpenAPI document: plain data for
templates/reference.html (which escapes it). Pure: no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 6  # deep enough for every body of this API; a guard against cycles


@dataclass
class Row:
    name: str
    type: str
    required: bool
    description: str
    depth: int = 0


@dataclass
class Answer:
    status: str
    description: str
    rows: list[Row]
    headers: list[Row]
    examples: list[tuple[str, str]]  # (title, JSON)


@dataclass
class Operation:
    anchor: str
    method: str
    path: str
    summary: str
    description: str
    public: bool
    parameters: list[Row]
    body: list[Row]
    body_examples: list[tuple[str, str]]
    answers: list[Answer]


@dataclass
class Page:
    title: str
    description: str
    operations: list[Operation] = field(default_factory=list)
    webhooks: list[Operation] = field(default_factory=list)
    error_codes: list[tuple[str, str]] = field(default_factory=list)  # (code, its statuses)


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _type(document: dict[str, Any], schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "oneOf" in schema:
        return " | ".join(_type(document, s) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join(kinds)
    if "array" in kinds and "items" in schema:
        text = text.replace("array", f"array of {_type(document, schema['items'])}")
    if "enum" in schema:
        text += ": " + ", ".join(json.dumps(v) for v in schema["enum"])
    limits = [
        f"{word} {schema[key]}"
        for key, word in (
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("minLength", "length ≥"),
            ("maxLength", "length ≤"),
            ("minItems", "items ≥"),
        )
        if key in schema
    ]
    if limits:
        text += " (" + ", ".join(limits) + ")"
    return text


def schema_rows(document: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> list[Row]:
    """One row per property, nested objects and arrays of objects indented under theirs."""
    schema = _resolve(document, schema)
    rows: list[Row] = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        target = _resolve(document, prop)
        description = prop.get("description") or target.get("description", "")
        rows.append(Row(name, _type(document, prop), name in required, description, depth))
        inner = target
        if target.get("items") is not None:
            inner = _resolve(document, target["items"])
        if "properties" in inner and depth < MAX_DEPTH:
            rows += schema_rows(document, inner, depth + 1)
    return rows


def _examples(content: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (example.get("summary", name), json.dumps(example["value"], indent=2))
        for name, example in content.get("examples", {}).items()
    ]


def _operation(document: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> Operation:
    parameters = [
        Row(
            f"{p['name']} ({p['in']})",
            _type(document, p.get("schema", {})),
            p.get("required", False),
            p.get("description", ""),
        )
        for p in (_resolve(document, p) for p in op.get("parameters", []))
    ]
    body, body_examples = [], []
    if "requestBody" in op:
        content = op["requestBody"]["content"]["application/json"]
        body, body_examples = schema_rows(document, content["schema"]), _examples(content)
    answers = []
    for status, response in op.get("responses", {}).items():
        response = _resolve(document, response)
        content = response.get("content", {}).get("application/json", {})
        rows = schema_rows(document, content["schema"]) if "schema" in content else []
        headers = [
            Row(name, _type(document, h.get("schema", {})), False, h.get("description", ""))
            for name, h in response.get("headers", {}).items()
        ]
        answers.append(Answer(status, response.get("description", ""), rows, headers, _examples(content)))
    return Operation(
        anchor=op.get("operationId", f"{method}-{path}"),
        method=method.upper(),
        path=path,
        summary=op.get("summary", ""),
        description=op.get("description", ""),
        public=op.get("security") == [],
        parameters=parameters,
        body=body,
        body_examples=body_examples,
        answers=answers,
    )


def reference_page(document: dict[str, Any]) -> Page:
    page = Page(document["info"]["title"], document["info"].get("description", ""))
    codes: dict[str, set[str]] = {}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            operation = _operation(document, path, method, op)
            page.operations.append(operation)
            for answer in operation.answers:
                for _, example in answer.examples:
                    codes.setdefault(json.loads(example)["error"]["code"], set()).add(answer.status)
    for name, operations in document.get("webhooks", {}).items():
        for method, op in operations.items():
            page.webhooks.append(_operation(document, name, method, op))
    page.error_codes = sorted((code, ", ".join(sorted(statuses))) for code, statuses in codes.items())
    return page
