"""Microservice chassis shared by every service: settings, logging, tracing, metrics, the gRPC
runtime, Postgres, messaging (outbox/inbox) and test fixtures. See chassis/README.md."""
