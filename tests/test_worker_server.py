"""The worker's HTTP/2 server, as Restate uses it: a few connections kept for the worker's lifetime."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events

from tests.harness import TestStack

REQUESTS = 1_200  # past hypercorn's default keep_alive_max_requests (1,000)


def test_one_connection_serves_requests_past_hypercorns_default_limit(stack: TestStack) -> None:
    # Hypercorn closes a connection after 1,000 requests by default, and with it every invocation
    # still streaming on it: Restate then retries them all and in-flight LLM calls are paid again.
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    statuses: list[bytes] = []
    closed: list[h2.events.ConnectionTerminated] = []
    with socket.create_connection(("127.0.0.1", stack.cfg.worker_port), timeout=10) as sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        for _ in range(REQUESTS):
            stream = conn.get_next_available_stream_id()
            headers = [(":method", "GET"), (":path", "/health"), (":scheme", "http"), (":authority", "worker")]
            conn.send_headers(stream, headers, end_stream=True)
            sock.sendall(conn.data_to_send())
            ended = False
            while not ended and not closed:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                        statuses.append(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                        ended = True
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        closed.append(event)
                sock.sendall(conn.data_to_send())
            if closed or not ended:
                break
    assert not closed, f"the worker closed the connection after {len(statuses)} requests: {closed[0]}"
    assert statuses == [b"200"] * REQUESTS
