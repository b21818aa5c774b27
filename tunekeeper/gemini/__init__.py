"""The tuning service: its vocabulary, limits and an aiohttp client."""
