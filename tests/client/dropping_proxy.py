"""Real TCP relays in front of the live service that break connections on purpose (no mocks).

`DroppingProxy`: the first request matching a prefix (e.g. `POST /v1/datasets`) is forwarded and
answered by the service, then the client's connection is closed before the answer reaches it, as when
a connection drops after the server did the work; HTTP/1.1 with Content-Length bodies only (what
httpx sends and the service answers for JSON). `CuttingRelay`: relays bytes, and cuts the first
server-sent event stream after its first event."""

from __future__ import annotations

import socket
import threading


def _read_message(sock: socket.socket, buffer: bytearray) -> bytes | None:
    """One HTTP message (head + Content-Length body) from `sock`; None when it closed first."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head_end = buffer.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buffer[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(buffer) < head_end + length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    message = bytes(buffer[: head_end + length])
    del buffer[: head_end + length]
    return message


class _Relay:
    """A listener on a free local port (`url`) that hands every accepted connection to `_connected`."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._connected(conn)

    def _connected(self, conn: socket.socket) -> None:
        raise NotImplementedError


class DroppingProxy(_Relay):
    def __init__(self, upstream_port: int, drop_prefix: bytes):
        self.drop_prefix = drop_prefix
        self.dropped: list[bytes] = []     # the requests whose answers were dropped
        self.requests: list[bytes] = []    # every request relayed
        super().__init__(upstream_port)

    def _connected(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            from_client, from_server = bytearray(), bytearray()
            while (request := _read_message(conn, from_client)) is not None:
                self.requests.append(request)
                upstream.sendall(request)
                answer = _read_message(upstream, from_server)
                if answer is None:
                    return
                if request.startswith(self.drop_prefix) and not self.dropped:
                    self.dropped.append(request)
                    return  # the service answered; the client never hears it
                conn.sendall(answer)


class CuttingRelay(_Relay):
    """A byte relay (any HTTP) that cuts one event stream: the first connection that asks for a path
    containing `marker` (e.g. b"/events") is closed right after the first server-sent event reaches
    the client, before the stream's `end`. Everything else is relayed untouched."""

    def __init__(self, upstream_port: int, marker: bytes):
        self.marker = marker
        self.cut = 0
        self.streams = 0  # requests for the marker seen (the first and the client's reconnections)
        self._lock = threading.Lock()
        super().__init__(upstream_port)

    def _connected(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        state = {"cut_me": False}
        threading.Thread(target=self._up, args=(conn, upstream, state), daemon=True).start()
        threading.Thread(target=self._down, args=(upstream, conn, state), daemon=True).start()

    def _up(self, conn: socket.socket, upstream: socket.socket, state: dict) -> None:
        try:
            while chunk := conn.recv(65536):
                if chunk.startswith(b"GET ") and self.marker in chunk.split(b"\r\n", 1)[0]:
                    with self._lock:
                        self.streams += 1
                        state["cut_me"] = self.cut == 0
                        self.cut += state["cut_me"]
                upstream.sendall(chunk)
        except OSError:
            pass
        finally:
            upstream.close()

    def _down(self, upstream: socket.socket, conn: socket.socket, state: dict) -> None:
        try:
            while chunk := upstream.recv(65536):
                conn.sendall(chunk)
                if state["cut_me"] and b"event:" in chunk:
                    break  # the first event went through; the rest of the stream never will
        except OSError:
            pass
        finally:
            conn.close()
            upstream.close()
