"""A TCP forwarder the tests cut to simulate a dropped link (shared by the stream tests)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading


class CuttableProxy:
    """A TCP forwarder on 127.0.0.1 whose connections the test can cut (a dropped link).

    ``hello``, when given, rewrites each client's hello line (a JSON object) on its way through.
    """

    def __init__(self, target_port: int, hello=None) -> None:
        self._target = target_port
        self._hello = hello
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self.connections = 0  # accepted so far
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            up = socket.create_connection(("127.0.0.1", self._target))
            self._conns += [down, up]
            if self._hello is not None:
                line = b""
                while not line.endswith(b"\n"):
                    line += down.recv(1)
                up.sendall(json.dumps(self._hello(json.loads(line))).encode() + b"\n")
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 20):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for s in self._conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._conns.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()
