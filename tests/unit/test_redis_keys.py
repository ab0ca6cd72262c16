"""Redis key names are part of the running fleet's state: code being upgraded must find the keys
the code before it wrote. A renamed key fails here first."""

from __future__ import annotations

import inspect
import re
from importlib import resources

import pytest

from batchcalls.adapters import redis_keys
from batchcalls.adapters.delivery import kicks as delivery_kicks
from batchcalls.adapters.delivery import leases as delivery_leases

BATCH = "5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f"

PER_BATCH = {
    redis_keys.batch_meta: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:meta",
    redis_keys.batch_ready: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:ready",
    redis_keys.batch_delayed: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:delayed",
    redis_keys.batch_leases: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:leases",
    redis_keys.batch_loading: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:loading",
    redis_keys.batch_wake: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:wake",
    redis_keys.batch_rebuild_lock: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:rebuild",
    redis_keys.relay_lock: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:relay",
    redis_keys.relay_dirty: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:relay-dirty",
    redis_keys.relay_queued: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:relay-queued",
    redis_keys.relay_retry: "bc:{5f0c1e9a-6d7b-4b8e-9c1f-0a2b3c4d5e6f}:relay-retry",
}


@pytest.mark.parametrize(("build", "expected"), PER_BATCH.items(), ids=[f.__name__ for f in PER_BATCH])
def test_each_per_batch_key_keeps_its_form(build: object, expected: str) -> None:
    assert callable(build)
    assert build(BATCH) == expected


def test_every_per_batch_key_carries_the_batch_hash_tag() -> None:
    built = [build(BATCH) for build in PER_BATCH]
    built += [*redis_keys.gate_keys(BATCH), *redis_keys.relay_keys(BATCH)]
    # Redis Cluster hashes only what lies between the first `{` and the next `}`.
    assert {re.search(r"\{([^}]*)\}", key).group(1) for key in built} == {BATCH}  # type: ignore[union-attr]


def test_every_per_batch_key_builder_is_pinned() -> None:
    builders = {
        fn
        for name, fn in inspect.getmembers(redis_keys, inspect.isfunction)
        if not name.startswith("_")
        and list(inspect.signature(fn).parameters) == ["batch_id"]
        and fn.__annotations__.get("return") == "str"
    }
    assert builders == set(PER_BATCH)


def test_script_key_lists_keep_their_order() -> None:
    # lua/acquire.lua reads KEYS[1..4] as meta, ready, delayed, leases; the kick script as lock, dirty,
    # queued, retry.
    assert redis_keys.gate_keys(BATCH) == [
        PER_BATCH[redis_keys.batch_meta],
        PER_BATCH[redis_keys.batch_ready],
        PER_BATCH[redis_keys.batch_delayed],
        PER_BATCH[redis_keys.batch_leases],
    ]
    assert redis_keys.relay_keys(BATCH) == (
        PER_BATCH[redis_keys.relay_lock],
        PER_BATCH[redis_keys.relay_dirty],
        PER_BATCH[redis_keys.relay_queued],
        PER_BATCH[redis_keys.relay_retry],
    )


def test_fleet_wide_keys_keep_their_form() -> None:
    assert redis_keys.METRICS == "bc:metrics"
    assert redis_keys.METRICS_LATENCY_SAMPLES == "bc:metrics:dispatch_latency_samples"
    assert redis_keys.RECONCILE_LOCK == "bc:reconcile-lock"
    assert redis_keys.DASHBOARD_SECRET == "bc:dashboard-secret"
    assert redis_keys.cps_log("ACC-1") == "bc:cps:{ACC-1}"
    assert redis_keys.scheduler_keys("ACC-1") == ["bc:cps:{ACC-1}:sched", "bc:cps:{ACC-1}", "bc:cps:{ACC-1}:pacer"]
    assert redis_keys.scheduler_live("ACC-1", "7") == "bc:cps:{ACC-1}:sched:live:7"
    assert redis_keys.tenant_delivery_leases(42) == "bc:{tenant-deliveries:42}"
    assert redis_keys.tenant_delivery_next(42) == "bc:{tenant-deliveries:42}:next"
    assert redis_keys.event_stream(3) == "bc:{events-3}:stream"
    assert redis_keys.event_drain_flag(3) == "bc:{events-3}:drain"
    # sha256("jti-1"), first 40 hex digits
    assert redis_keys.vonage_replay("jti-1") == "bc:vonage-jti:" + ("5964da055ae31cf8eb7230e190a504899c6f60f0")


def test_scripts_take_their_keys_as_arguments() -> None:
    """A key a script builds itself would be invisible to Redis Cluster and to this module."""
    lua = resources.files("batchcalls.adapters").joinpath("lua")
    scripts = [f.read_text() for f in lua.iterdir() if f.name.endswith(".lua")]
    scripts += [delivery_kicks._KICK, delivery_leases._TAKE]
    assert len(scripts) >= 5
    for script in scripts:
        assert "bc:" not in script
        assert "KEYS[" in script
