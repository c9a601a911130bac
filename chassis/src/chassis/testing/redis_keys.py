"""Removing a test run's or a benchmark run's Redis keys: everything under its prefix."""

from __future__ import annotations


async def delete_keys(redis_url: str, prefix: str) -> int:
    """Delete every key under `prefix` (a run's own, e.g. `test:<run>:`); returns how many."""
    import redis.asyncio as redis

    client = redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()
