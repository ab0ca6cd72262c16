"""Flags are keyword-only in the product packages: `place(call_id, urgent=True)` reads at the call
site, `place(call_id, True)` does not. A parameter annotated `bool` (or `bool | None`), or with
a `True`/`False` default, must come after `*`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["batchcalls", "api", "workers", "config"]

Function = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


def _is_bool(annotation: ast.expr | None) -> bool:
    """`bool`, `bool | None`, `Optional[bool]` (string annotations are parsed too)."""
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return _is_bool(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.Name):
        return annotation.id == "bool"
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _is_bool(annotation.left) or _is_bool(annotation.right)
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) in {"Optional", "typing.Optional"}:
        return _is_bool(annotation.slice)
    return False


def _is_click_command(function: Function) -> bool:
    """Click calls its commands with keywords (one per option), whatever their signature."""
    for decorator in getattr(function, "decorator_list", []):
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in {"command", "group"}:
            return True
    return False


def positional_flags(source: str) -> list[tuple[int, str, str]]:
    """(line, function, parameter) of each flag in `source` that may be passed by position."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, Function) or _is_click_command(node):
            continue
        positional = node.args.posonlyargs + node.args.args
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(node.args.defaults))
        defaults += node.args.defaults
        for arg, default in zip(positional, defaults, strict=True):
            bool_default = isinstance(default, ast.Constant) and isinstance(default.value, bool)
            if _is_bool(arg.annotation) or bool_default:
                found.append((node.lineno, getattr(node, "name", "<lambda>"), arg.arg))
    return sorted(found)


def test_flags_are_keyword_only() -> None:
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}:{line} {function}({parameter})"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, function, parameter in positional_flags(path.read_text())
    ]
    assert not offenders, f"boolean parameters that may be passed by position; put them after `*`: {offenders}"


def test_the_check_finds_what_it_should() -> None:
    source = """
def annotated(a: int, urgent: bool) -> None: ...
def defaulted(a, freed=False): ...
def optional(a, allowed: bool | None = None): ...
def quoted(a, lock: "bool" = False): ...
def positional_only(flag: bool, /): ...
async def asynchronous(a, *, ok: bool, also=True, more: bool = False): ...
def keyword_only(a: int, *, urgent: bool = False, freed=True) -> None: ...
def unrelated(a: int = 0, b: str = "x", c: "int | None" = None): ...
with_lambda = lambda a, verbose=True: a

@main.command()
def cli_command(as_json: bool) -> None: ...
"""
    assert positional_flags(source) == [
        (2, "annotated", "urgent"),
        (3, "defaulted", "freed"),
        (4, "optional", "allowed"),
        (5, "quoted", "lock"),
        (6, "positional_only", "flag"),
        (10, "<lambda>", "verbose"),
    ]
