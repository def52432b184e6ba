"""The aiohttp web process: JSON API under /api/0/ and a few server-rendered pages."""
