"""The Prefect CLI with one client call fixed for the server versions this project installs:
``python -m flows.prefect_compat deploy ...`` is ``prefect deploy ...``.

Prefect 3.8's client lists a work pool's workers sending ``"offset": null, "limit": null``; its
server, under FastAPI 0.154 (``constraints.txt``), rejects explicit nulls for those integer body
fields with a 422. ``prefect deploy`` makes that call after registering each deployment (to hint
that no worker is running yet), so it failed after the first one. Here the call sends the
server's defaults (offset 0, limit 200) instead of nulls; nothing else changes.
"""

from __future__ import annotations

import functools

DEFAULT_LIMIT = 200  # PREFECT_SERVER_API_DEFAULT_LIMIT's default


def patch_worker_listing() -> None:
    """Make ``read_workers_for_work_pool`` (sync and async clients) send integers, not nulls."""
    from prefect.client.orchestration._work_pools.client import WorkPoolAsyncClient, WorkPoolClient

    for cls in (WorkPoolClient, WorkPoolAsyncClient):
        original = cls.read_workers_for_work_pool
        if getattr(original, "_hvd_patched", False):
            continue

        def fixed(self, work_pool_name, worker_filter=None, offset=None, limit=None, _original=original):
            return _original(self, work_pool_name, worker_filter, 0 if offset is None else offset, DEFAULT_LIMIT if limit is None else limit)

        functools.update_wrapper(fixed, original)
        fixed._hvd_patched = True
        cls.read_workers_for_work_pool = fixed


def main() -> None:
    patch_worker_listing()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
