"""Test helpers for sinks, shipped with the library.

A fault-injecting TCP proxy, and a runner that returns a pipeline's outputs with its counters.

Example::

    with FaultProxy("127.0.0.1", 5432, cut_on=b"SKU-0170") as proxy:
        dsn = f"host=127.0.0.1 port={proxy.port} user=backbone dbname=backbone"
        run = run_pipeline(lambda p: {"dead": rows(p) | WriteToPostgresVersioned(dsn, ...)})
        # the moment a client sends b"SKU-0170", every connection drops and the port refuses
        # new ones, as if the server had died mid-run
        proxy.restore()  # the "server" is back

The proxy sits in front of the *real* service: the service is not faked, only the network
between the pipeline and it fails, so tests can stop "the database" mid-run without stopping a
database other tests share.
"""

from __future__ import annotations

import base64
import contextlib
import pickle
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["FaultProxy", "PipelineRun", "run_pipeline"]


class FaultProxy:
    """A TCP proxy to ``upstream`` that can drop every connection and refuse new ones.

    Args:
        upstream_host: the real service's host.
        upstream_port: the real service's port.
        cut_on: cut automatically (before forwarding) when a client sends these bytes.
        host: where to listen (a free port is chosen).
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        cut_on: bytes | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.cut_on = cut_on
        self.host = host
        self.port = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepting = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._listen()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cut()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        listener.settimeout(0.1)  # poll, so closing the listener stops the accept loop
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting.set()
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._accepting.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
            with self._lock:
                if not self._accepting.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        tail = b""
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if from_client and self.cut_on:
                    if self.cut_on in tail + chunk:
                        self.cut()
                        return
                    tail = (tail + chunk)[-len(self.cut_on) :]
                dst.sendall(chunk)
        except OSError:
            pass  # the other side or a cut closed the socket
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def cut(self) -> None:
        """Drop every connection and stop listening: clients see resets, then refusals."""
        with self._lock:
            if not self._accepting.is_set():
                return
            self._accepting.clear()
            self.cuts += 1
            socks, self._sockets = list(self._sockets), set()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._drop(*socks)

    def restore(self, *, keep_trigger: bool = False) -> None:
        """Listen again on the same port (the service is back); the trigger is disarmed."""
        if not keep_trigger:
            self.cut_on = None
        if not self._accepting.is_set():
            self._listen()


@dataclass
class PipelineRun:
    """The elements of a pipeline's named outputs and its committed counters."""

    outputs: dict[str, list[Any]]
    counters: dict[tuple[str, str], int]

    def counter(self, name: str, namespace: str | None = None) -> int:
        """A counter's committed value (summed over steps; 0 if never incremented)."""
        return sum(
            v for (ns, n), v in self.counters.items() if n == name and namespace in (None, ns)
        )


def run_pipeline(
    build: Callable[[beam.Pipeline], Mapping[str, beam.PCollection]],
    options: PipelineOptions | None = None,
) -> PipelineRun:
    """Run a pipeline; return the elements of the PCollections ``build`` names, and counters.

    Like ``retail_backbone.testing.collect`` (elements travel through files, so any runner
    works), plus the counters, which sink tests assert on.
    """
    with tempfile.TemporaryDirectory() as tmp:
        p = beam.Pipeline(options=options)
        names = []
        for name, pcoll in build(p).items():
            names.append(name)
            _ = (
                pcoll
                | f"Encode{name}" >> beam.Map(lambda x: base64.b64encode(pickle.dumps(x)).decode())
                | f"Write{name}" >> beam.io.WriteToText(f"{tmp}/{name}", shard_name_template="")
            )
        result = p.run()
        result.wait_until_finish()
        outputs: dict[str, list[Any]] = {name: [] for name in names}
        for path in Path(tmp).iterdir():
            lines = path.read_text().splitlines()
            outputs[path.name] = [pickle.loads(base64.b64decode(line)) for line in lines]
        counters: dict[tuple[str, str], int] = {}
        for c in result.metrics().query(MetricsFilter())["counters"]:
            key = (c.key.metric.namespace, c.key.metric.name)
            counters[key] = counters.get(key, 0) + (c.committed or 0)
        return PipelineRun(outputs, counters)
