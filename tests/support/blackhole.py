"""A TCP proxy between clients and the broker that can go silent without closing anything.

While black-holed it forwards nothing either way and keeps every broker-side connection
alive with MQTT PINGREQs, as a broker node that lost a client's session state would: the
broker never times the client out, so it never publishes the client's Last Will, and the
client is simply silent. Only this machine's loopback is involved.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

PINGREQ = b"\xc0\x00"
"""An MQTT PINGREQ packet (fixed header only)."""

KEEPALIVE_EVERY_S = 0.3
"""How often a black-holed broker-side connection gets a PINGREQ (below any test keepalive)."""


class BlackholeProxy:
    """Listens on a free loopback port and forwards to ``target`` until told to go silent."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._silent = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._broker_sides: list[socket.socket] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._keep_alive, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        """Forward nothing from now on; connections stay open."""
        self._silent.set()

    def heal(self) -> None:
        """Forward again. Connections that lived through the silence are closed (their
        client gave up on them long ago); clients reconnect through the proxy."""
        with self._lock:
            stale = list(self._sockets)
            self._sockets.clear()
            self._broker_sides.clear()
        self._silent.clear()
        for sock in stale:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self.heal()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                broker = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, broker):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self._lock:
                self._sockets += [client, broker]
                self._broker_sides.append(broker)
            threading.Thread(target=self._pump, args=(client, broker), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                if not self._silent.is_set():  # a silent proxy closes nothing
                    for sock in (source, sink):
                        with contextlib.suppress(OSError):
                            sock.close()
                return
            if self._silent.is_set():
                continue
            with contextlib.suppress(OSError):
                sink.sendall(data)

    def _keep_alive(self) -> None:
        while not self._closed.is_set():
            if self._silent.is_set():
                with self._lock:
                    sides = list(self._broker_sides)
                for sock in sides:
                    with contextlib.suppress(OSError):
                        sock.sendall(PINGREQ)
            time.sleep(KEEPALIVE_EVERY_S)
