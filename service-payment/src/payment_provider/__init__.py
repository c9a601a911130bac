"""payment-provider: a simulated payment provider (a stand-in for a real one such as Stripe),
with an idempotent HTTP API and a ledger in PostgreSQL. See the service-payment README."""
