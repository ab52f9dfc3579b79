"""The local store: recordings on this machine's disk (``store.LocalRepository``)."""

from cte1_mcp.repository.local.store import LocalRepository

__all__ = ["LocalRepository"]
