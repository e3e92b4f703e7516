"""A TCP proxy in front of moto_server that can be stopped and started again: the S3 endpoint going away and coming
back, as a client sees it (connections refused), while moto keeps its buckets in memory.

``stop_on`` (a regular expression over the bytes a client sends) stops it at a chosen request, e.g. the first upload
into the checkpoint output: the endpoint then goes away in the middle of a materialization, at the same point in
every run (no timing). ``on_request`` is called with each request line (``PUT /bucket/key``) before the request
goes on, so a test can act at a chosen request while the client waits for it; ``requests`` lists them all in order.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable

from tests.conftest import free_port

# A request's first line, at the start of what the client sends: an HTTP/1.1 client waits for each response before
# it sends the next request on a connection.
REQUEST_LINE = re.compile(rb"((?:GET|HEAD|PUT|POST|DELETE) \S+) HTTP/1\.1\r\n")


class EndpointProxy:
    def __init__(self, target_port: int, stop_on: re.Pattern[bytes] | None = None,
                 on_request: Callable[[str], None] | None = None):
        self.target_port, self.port, self.stop_on, self.on_request = target_port, free_port(), stop_on, on_request
        self.listener: socket.socket | None = None
        self.stopped_on_request = threading.Event()
        self.requests: list[str] = []  # every request line that reached the endpoint, in order

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def stop(self) -> None:
        assert self.listener is not None
        self.listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(1 << 16):
                if from_client and self.stop_on and self.stop_on.search(data) and not self.stopped_on_request.is_set():
                    self.stopped_on_request.set()
                    self.stop()  # the endpoint goes away; this request never reaches it
                    break
                if from_client and (request := REQUEST_LINE.match(data)):
                    self.requests.append(request.group(1).decode())
                    if self.on_request is not None:
                        self.on_request(self.requests[-1])
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()
            source.close()
