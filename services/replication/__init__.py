"""Geo-replication: the `replications` child resource of a Premium registry (rules.py, store.py) and the
worker that copies content between regions."""
