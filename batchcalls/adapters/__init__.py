"""The parts that talk to the world: PostgreSQL, Redis, the telephony provider, callback receivers, metrics."""
