"""`payment-provider` entry point: uvicorn (uvloop) serving the simulated provider's HTTP API,
settings from the environment."""

from __future__ import annotations

import uvicorn

from chassis.logging import configure_logging
from chassis.settings import load_settings
from payment_provider.app import create_app
from payment_provider.settings import ProviderSettings


def main() -> None:
    settings = load_settings(ProviderSettings)
    configure_logging(ProviderSettings.service_name, settings.log_level, settings.log_format)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        access_log=False,  # each operation writes its own `provider_operation` line
        log_config=None,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE


if __name__ == "__main__":
    main()
