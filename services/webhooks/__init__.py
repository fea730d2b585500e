"""Webhooks: the resources (per registry, ACR's settings and tier caps) and the delivery worker that POSTs
events to them, the first consumer of the bus's `webhooks` subscription."""
