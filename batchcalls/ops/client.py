"""A small HTTP client of the Batchcalls API, for the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests


class Unreachable(Exception):
    """The API did not answer: nothing listens there, or it timed out."""


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


def _api_error(response: requests.Response) -> ApiError:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = {"code": "http_error", "message": response.text[:300], "details": None}
    return ApiError(response.status_code, error.get("code", ""), error.get("message", ""), error.get("details"))


@dataclass
class Client:
    base_url: str
    api_key: str
    timeout: float = 60.0

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}", **kwargs.pop("headers", {})}
        url = self.base_url.rstrip("/") + path
        try:
            response = requests.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise Unreachable(f"cannot reach the API at {self.base_url}: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise _api_error(response)
        return response.json() if response.content else None

    def suppress(self, numbers: list[str], reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"phone_numbers": numbers, **({"reason": reason} if reason is not None else {})}
        result: dict[str, Any] = self._request("POST", "/v1/suppressions", json=body)
        return result

    def unsuppress(self, number: str) -> None:
        self._request("DELETE", f"/v1/suppressions/{quote(number, safe='')}")

    def suppressions(self, phone_number: str | None = None) -> list[dict[str, Any]]:
        """Every suppression of the tenant (or the one of `phone_number`), page after page."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            if phone_number is not None:
                params["phone_number"] = phone_number
            page = self._request("GET", "/v1/suppressions", params=params)
            found += page["suppressions"]
            cursor = page["next_cursor"]
            if not cursor:
                return found

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._request("POST", "/v1/batches", json=body, headers=headers)
        return result

    def status(self, batch_id: str, calls_limit: int = 100) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/batches/{batch_id}", params={"calls_limit": calls_limit})
        return result

    def command(self, batch_id: str, command: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """`pause`, `resume` or `cancel` the batch; the answer is its status body."""
        result: dict[str, Any] = self._request("POST", f"/v1/batches/{batch_id}/{command}", json=body or {})
        return result

    def results(self, batch_id: str, fmt: str) -> Iterator[bytes]:
        """The batch's results export (`jsonl` or `csv`), as the API streams it, chunk by chunk."""
        headers = {"Authorization": f"Bearer {self.api_key}"}
        url = f"{self.base_url.rstrip('/')}/v1/batches/{quote(batch_id, safe='')}/results"
        try:
            response = requests.get(url, headers=headers, params={"format": fmt}, timeout=self.timeout, stream=True)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise Unreachable(f"cannot reach the API at {self.base_url}: {type(exc).__name__}") from exc
        with response:
            if response.status_code >= 400:
                raise _api_error(response)
            yield from response.iter_content(chunk_size=65536)

    def calls(self, batch_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = self._request("GET", f"/v1/batches/{batch_id}/calls", params=params)
            found += page["calls"]
            cursor = page["next_cursor"]
            if not cursor:
                return found
