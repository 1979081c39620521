"""The domain floor: what the service does (indexing, sampling, health, alerts, candidate comparison)."""
