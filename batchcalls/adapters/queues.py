"""The Celery queues the fleet's work travels through, named once for the workers' routing,
the processes that consume them and /metrics.

Deliveries have a queue of their own: a POST may take up to its deadline, and on the queue of
call handling a few slow receivers would hold up dials and provider events fleet-wide. In
production a dedicated delivery worker consumes it (Procfile `delivery`); a worker started
without `--queues` consumes both (the test stack and the drills do, on few processes).
"""

from __future__ import annotations

CALLS_QUEUE = "celery"  # Celery's default name: every task but `deliver`
DELIVERY_QUEUE = "deliveries"
QUEUES = (CALLS_QUEUE, DELIVERY_QUEUE)
