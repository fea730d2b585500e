"""Registry events: ACR's webhook payload model, which operations raise which events, and the outbox
publisher that puts committed events on the bus (`services/platform/bus.py`)."""
