"""The account's dial scheduler (`lua/scheduler.lua`): who creates the next provider call under the
calls-per-second limit, the ceilings of tenants, and the one pacer that takes the turns. `Gates`
carries these methods; the script is registered there with the others."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.commands.core import Script

from batchcalls.adapters import redis_keys


@dataclass(frozen=True)
class Turn:
    """What one `take_turn` found: a batch whose call may be created at `at` (Unix seconds),
    with the creation-log `member` to give back if no call is placed; or a `wait` in seconds
    until the next instant; or `idle` (no batch waits: the pacer stops); or `other` (another
    task is the pacer)."""

    kind: str
    batch_id: str = ""
    at: float = 0.0
    member: str = ""
    wait: float = 0.0
    tenant: str = ""


@dataclass(frozen=True)
class Report:
    """What the last turn's batch can do now, for the scheduler: `wants` the priority of its
    next call, or None when it cannot dial (paused, no free slot, nothing waiting); the turn's
    `member`, and the call it placed (`call_id`) or the instant to give back (`give_back`)."""

    batch_id: str
    wants: int | None
    tenant: str
    give_back: str = ""
    member: str = ""
    call_id: str = ""


class DialScheduler:
    redis: redis.Redis
    _scheduler: Script

    def settle(self, account: str, batch_id: str, tenant: str, wants: int | None, released: Iterable[str] = ()) -> bool:
        """Tell the dial scheduler that `released` calls of the batch's tenant hold no slot now,
        and register the batch for a creation turn at priority `wants` (None: it cannot dial).
        True when no pacer runs and the caller must start one."""
        ids = list(released)
        args: list[str | int] = ["settle", batch_id, tenant, -1 if wants is None else wants, len(ids), *ids]
        return bool(self._scheduler(keys=redis_keys.scheduler_keys(account), args=args))

    def give_back(self, account: str, at: float) -> None:
        """Return a creation instant that was given out and not used (no call created at it)."""
        at_ms = round(at * 1000)
        self.redis.zremrangebyscore(redis_keys.cps_log(account), at_ms, at_ms)

    def join(self, account: str, batch_id: str, tenant: str, priority: int) -> bool:
        """Register the batch as waiting for a creation turn at `priority` (see `settle`)."""
        return self.settle(account, batch_id, tenant, priority)

    def set_tenant_limits(
        self, account: str, tenant: str, calls_per_second: float | None, concurrent_calls: int | None
    ) -> None:
        """The tenant's ceilings under the account (None: no ceiling)."""
        args: list[str | int] = ["limits", tenant, f"{calls_per_second or 0:g}", concurrent_calls or 0]
        self._scheduler(keys=redis_keys.scheduler_keys(account), args=args)

    def tenant_live(self, account: str, tenant: str) -> list[str]:
        """What the scheduler counts as the tenant's calls holding a slot (under a ceiling)."""
        return [_text(m) for m in self.redis.zrange(redis_keys.scheduler_live(account, tenant), 0, -1)]

    def forget_live(self, account: str, tenant: str, members: Iterable[str]) -> None:
        ids = list(members)
        if ids:
            self.redis.zrem(redis_keys.scheduler_live(account, tenant), *ids)

    def kick(self, account: str) -> bool:
        """True when batches wait for turns and no pacer runs: the caller must start one."""
        return bool(self._scheduler(keys=redis_keys.scheduler_keys(account), args=["kick"]))

    def handoff(self, account: str, token: str) -> bool:
        """Pass the pacer's role on to a new pacer task (the caller sends it)."""
        return bool(self._scheduler(keys=redis_keys.scheduler_keys(account), args=["handoff", token]))

    def take_turn(
        self,
        account: str,
        token: str,
        limit: float,
        window_seconds: float,
        *,
        lookahead: float,
        hold: float,
        tolerance: float = 0.0,
        report: Report | None = None,
    ) -> Turn:
        """Report what the last turn's batch can do now, then take the next creation turn.
        `tolerance` widens the windows of tenants' own calls-per-second ceilings as `window_seconds`
        is widened over one second."""
        args: list[str | int] = [
            "take",
            token,
            int(limit),
            int(window_seconds * 1000),
            int(lookahead * 1000),
            int(hold * 1000),
            int(tolerance * 1000),
        ]
        if report is None:
            args += ["", -1, "", "", "", ""]
        else:
            wants = -1 if report.wants is None else report.wants
            args += [report.batch_id, wants, report.tenant, report.give_back, report.member, report.call_id]
        result = self._scheduler(keys=redis_keys.scheduler_keys(account), args=args)
        kind = _text(result[0])
        if kind == "grant":
            return Turn(kind, _text(result[1]), int(result[2]) / 1000, _text(result[3]), tenant=_text(result[4]))
        if kind == "wait":
            return Turn(kind, wait=int(result[1]) / 1000)
        return Turn(kind)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
