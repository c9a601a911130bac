"""Test support for services: the pytest plugin (isolated Postgres/Redis/RabbitMQ per run) and
`ServiceProcess`, a service started as a real subprocess."""
