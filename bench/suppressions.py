"""Scenario 10: the cost of the suppression check with a large suppression list. A call's number
is looked up in its tenant's suppressions twice: at submit (all of a group's numbers in one
statement) and in the statement that records each attempt (one probe of the primary key). Both
are timed with 1,000 and with `many` numbers suppressed. The primary key is a B-tree, so a probe
is O(log n): a million numbers add a level or two to it, microseconds against a dial's
milliseconds."""

from __future__ import annotations

import statistics
import time

from batchcalls.adapters.store.suppressions import suppressed_among
from batchcalls.adapters.store.tenants import hash_key
from bench.rows import Row
from bench.stack import Stack

_FILL = (
    "INSERT INTO suppressions (tenant_id, phone_number, reason)"
    " SELECT %s, '+1202' || lpad(i::text, 7, '0'), 'bench' FROM generate_series(%s, %s - 1) AS i"
    " ON CONFLICT DO NOTHING"
)
# The probe of the attempt's statement (`store.attempts.record_attempt`), on its own.
_PROBE = "SELECT EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = %s AND s.phone_number = %s)"
PROBES = 400
GROUP = 5000  # numbers checked at submit in one statement (a CSV upload's group)


def _timed_probes(stack: Stack, tenant_id: int, listed: int) -> float:
    """Median microseconds the server spends on one probe (EXPLAIN ANALYZE's execution time: a
    round trip's time is mostly the network stack's, which varies more than the probe), half of
    them to listed numbers."""
    spent = []
    with stack.cursor() as cur:
        for i in range(-50, PROBES):  # the first 50 warm the connection and the index's pages up
            number = f"+1202{(i * 7919) % listed:07d}" if i % 2 else f"+1303{i % PROBES:07d}"
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + _PROBE, (tenant_id, number))
            plan = cur.fetchone()["QUERY PLAN"][0]
            if i >= 0:
                spent.append(float(plan["Execution Time"]) / 1000)
    return statistics.median(spent) * 1e6


def _timed_group(stack: Stack, tenant_id: int, listed: int) -> float:
    """Milliseconds to check a group of GROUP numbers at submit, half of them listed."""
    numbers = [f"+1202{(i * 7919) % listed:07d}" if i % 2 else f"+1303{i:07d}" for i in range(GROUP)]
    listed_ones = {number for number in numbers if number.startswith("+1202")}
    spent = []
    with stack.cursor() as cur:
        for _ in range(5):
            started = time.perf_counter()
            found = suppressed_among(cur, tenant_id, numbers)
            spent.append(time.perf_counter() - started)
            if found != listed_ones:
                raise RuntimeError(f"expected {len(listed_ones)} suppressed numbers, found {len(found)}")
    return statistics.median(spent) * 1e3


def suppression_lookups(stack: Stack, many: int) -> dict[str, float]:
    with stack.cursor() as cur:
        cur.execute("SELECT tenant_id FROM api_keys WHERE key_hash = %s", (hash_key(stack.api_key),))
        tenant_id = cur.fetchone()["tenant_id"]
        cur.execute("DELETE FROM suppressions WHERE tenant_id = %s AND reason = 'bench'", (tenant_id,))
        cur.execute(_FILL, (tenant_id, 0, 1000))
        cur.execute("ANALYZE suppressions")
    figures = {"suppress_probe_small_us": _timed_probes(stack, tenant_id, 1000)}
    figures["suppress_group_small_ms"] = _timed_group(stack, tenant_id, 1000)
    with stack.cursor() as cur:
        cur.execute(_FILL, (tenant_id, 1000, many))
        cur.execute("ANALYZE suppressions")
    figures["suppress_probe_many_us"] = _timed_probes(stack, tenant_id, many)
    figures["suppress_group_many_ms"] = _timed_group(stack, tenant_id, many)
    figures["suppress_probe_ratio"] = figures["suppress_probe_many_us"] / figures["suppress_probe_small_us"]
    with stack.cursor() as cur:
        cur.execute("DELETE FROM suppressions WHERE tenant_id = %s AND reason = 'bench'", (tenant_id,))
    return figures


def rows(many: int) -> list[Row]:
    return [
        Row(
            "10 Suppressions",
            "dial-time probe (server time), 1,000 numbers listed",
            "suppress_probe_small_us",
            "µs",
            "",
            None,
        ),
        Row("", f"... {many:,} numbers listed", "suppress_probe_many_us", "µs", "", None),
        Row("", f"... {many:,} / 1,000 (a B-tree probe: one level deeper)", "suppress_probe_ratio", "", "", None),
        Row("", f"submit check of {GROUP:,} numbers, 1,000 listed", "suppress_group_small_ms", "ms", "", None),
        Row("", f"... {many:,} listed", "suppress_group_many_ms", "ms", "", None),
    ]
