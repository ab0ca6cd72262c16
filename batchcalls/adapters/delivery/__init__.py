"""Outbound webhooks: which addresses may be called, the HTTP POST, per-tenant leases, the outbox relay."""
