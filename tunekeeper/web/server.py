"""The status page on a server of its own (`tunekeeper web`), until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from tunekeeper.config import EX_CONFIG, Settings
from tunekeeper.db.engine import make_engine
from tunekeeper.db.migrate import SchemaMismatch, check_schema
from tunekeeper.logs import get_logger
from tunekeeper.web.app import StatusPage

log = get_logger(__name__)


async def serve(settings: Settings) -> int:
    """Serve until a signal; the exit status (78 when the database's schema is not this code's)."""
    engine = make_engine(settings.database.url, pool_size=1)
    try:
        await check_schema(engine)
    except SchemaMismatch as exc:
        log.error("schema_mismatch", error=str(exc))
        return EX_CONFIG
    finally:
        await engine.dispose()
    app = web.Application()
    StatusPage.from_settings(settings).mount(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, settings.web.host, settings.web.port)
        await site.start()
        port = runner.addresses[0][1]
        log.info("web_listening", host=settings.web.host, port=port, base_path=settings.web.base_path or "/")
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
