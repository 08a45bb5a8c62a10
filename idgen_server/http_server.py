"""Run the HTTP API beside the gRPC server: an event loop of its own, in one thread.

The gRPC server answers from a pool of threads; the HTTP API (``idgen_server.http_api``)
is served by aiohttp on an asyncio loop that runs in the thread ``idgen-http``, with its
own small pool of workers (``idgen-http-*``) for what may block. ``start`` returns once it
listens (or raises ``ConfigError`` if it cannot); ``begin_stop`` stops listening and gives
calls in flight ``grace`` seconds, ``stop`` waits for that and ends the thread.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from idgen_core.errors import ConfigError

__all__ = ["HttpServer"]

log = logging.getLogger(__name__)

_KEEPALIVE = 15.0
"""Seconds an idle keep-alive connection is kept: bounded, so idle clients cannot pile up."""


class _ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's own log, with a malformed request (which its client got a 400 for) one DEBUG
    line without a traceback: else anyone could fill the server's log with ERROR tracebacks."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        error = kwargs.get("exc_info")
        if error is True:
            error = sys.exc_info()[1]
        if isinstance(error, HttpProcessingError | RequestPayloadError):
            kwargs.pop("exc_info")
            text = str(msg) % args if args else str(msg)
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            level, msg, args = logging.DEBUG, "%s: %s", (text, reason)
        super().log(level, msg, *args, **kwargs)  # type: ignore[arg-type]


class HttpServer:
    """Serves ``app`` on ``listen`` (``HOST:PORT``; port 0 picks a free one), with TLS if
    ``ssl_context`` is given, blocking work on ``workers`` threads. A context manager."""

    def __init__(self, app: web.Application, listen: str, *,
                 ssl_context: ssl.SSLContext | None = None, grace: float = 5.0,
                 workers: int = 8) -> None:
        self._app = app
        host, _, port = listen.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port)
        self._ssl = ssl_context
        self._grace = grace
        self._workers = workers
        self._workers_started: list[threading.Thread] = []
        self._stopping: Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started: Future[str] = Future()
        self.address = ""
        """``host:port`` it listens on, once started (the real port if 0 was asked for)."""

    @property
    def tls(self) -> bool:
        return self._ssl is not None

    def start(self, timeout: float = 30.0) -> HttpServer:
        """Listen and serve; ``ConfigError`` if the address is taken or not local."""
        self._thread = threading.Thread(target=self._run, name="idgen-http", daemon=True)
        self._thread.start()
        try:
            self.address = self._started.result(timeout)
        except TimeoutError:
            self.stop()
            raise ConfigError(f"the HTTP server did not start within {timeout:g}s") from None
        except BaseException:
            self._thread.join(timeout)
            raise
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        # Blocking work of the routes (idgen_server.http_api): a pool of its own, so that a
        # database that hangs holds up HTTP calls only, never the gRPC server's workers.
        executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="idgen-http",
                                      initializer=self._worker_started)
        loop.set_default_executor(executor)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._started.set_exception(exc)
            executor.shutdown(wait=False)
            loop.close()
            return
        self._started.set_result(self.address)
        try:
            loop.run_forever()
        finally:
            # A worker may still wait on a database (until its timeout): not waited for here,
            # as the gRPC server's are not; the loop is closed only once none is left, since
            # a worker that ends hands its result to the loop.
            executor.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + self._grace + 5
            for worker in list(self._workers_started):
                worker.join(max(0.0, deadline - time.monotonic()))
            if not any(worker.is_alive() for worker in self._workers_started):
                loop.close()

    def _worker_started(self) -> None:
        self._workers_started.append(threading.current_thread())

    async def _listen(self) -> None:
        # Calls in flight get one second beyond the grace: the server closes its buffers at
        # the grace, and a call waiting on one then answers 503 rather than being cut off.
        # No decompression: a request body takes under 100 bytes, and a bad gzip stream
        # would only be a way to make the server log errors.
        runner = web.AppRunner(self._app, handle_signals=False, access_log=None,
                               keepalive_timeout=_KEEPALIVE, shutdown_timeout=self._grace + 1,
                               auto_decompress=False,
                               logger=_ProtocolLog(logging.getLogger("aiohttp.server"), {}))
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl,
                           reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self._host}:{self._port}"
            raise ConfigError(f"cannot serve HTTP on {where}: {exc.strerror or exc}") from None
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def begin_stop(self) -> None:
        """Stop listening now; calls in flight get ``grace`` seconds (and one more) to end."""
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None and self._stopping is None and not loop.is_closed():
            self._stopping = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)

    def stop(self) -> None:
        """``begin_stop`` if not begun, wait for the calls in flight, end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        self.begin_stop()
        if self._stopping is not None:
            try:
                self._stopping.result(self._grace + 5)
            except Exception:  # stopping goes on regardless
                log.warning("the HTTP server's calls did not end within %gs of the grace",
                            5.0, exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._grace + 10)

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
