"""hvd flows: Prefect flows and deployments that fan stages out over Dask and call ``pipeline``."""
