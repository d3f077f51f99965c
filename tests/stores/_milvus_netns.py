"""Run Milvus standalone inside a private network namespace, reachable only through a unix socket.

Milvus 2.3 listens on every interface (``:19530``, ``:9091`` and its coordinators' ports) and has no
setting to bind them to loopback. Started inside ``unshare -n`` it has a namespace of its own whose
only interface is its own ``lo``; this script (run inside that namespace) brings ``lo`` up, starts the
server with a data folder, and relays the unix socket ``SOCK`` to its proxy port. The test process
relays a loopback TCP port of the host to ``SOCK`` (see ``servers.py``).

Usage (inside the namespace): python _milvus_netns.py DATA_DIR SOCK BIN_CACHE
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import sys
import threading


def loopback_up() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))  # SIOCGIFFLAGS
        flags = struct.unpack("16sH", ifr[:18])[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # SIOCSIFFLAGS, IFF_UP
    finally:
        s.close()


def pump(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            data = a.recv(1 << 16)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay_unix_to_tcp(path: str, port: int) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        up = socket.create_connection(("127.0.0.1", port))
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pump, args=(conn, up), daemon=True).start()
        threading.Thread(target=pump, args=(up, conn), daemon=True).start()


def main() -> None:
    data_dir, sock, bin_cache = sys.argv[1:4]
    loopback_up()
    from milvus import MilvusServer, MilvusServerConfig

    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(bin_cache, exist_ok=True)
    if not os.path.exists(os.path.join(data_dir, "bin")):  # unpack the server once, reuse it after
        os.symlink(bin_cache, os.path.join(data_dir, "bin"))
    server = MilvusServer(MilvusServerConfig(data_dir=data_dir))

    def stop(*_):
        server.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    threading.Thread(target=relay_unix_to_tcp, args=(sock, server.listen_port), daemon=True).start()
    print("READY", server.listen_port, flush=True)
    while server.running and server.server_proc.poll() is None:
        threading.Event().wait(0.5)
    print("milvus exited", flush=True)
    os._exit(1)


if __name__ == "__main__":
    main()
