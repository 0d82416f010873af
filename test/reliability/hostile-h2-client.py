#!/usr/bin/env python3
"""A hostile gRPC caller speaking raw HTTP/2 (Debian python3-h2): it sends
what grpcio and grpc-js never would, one stream per run, and prints one JSON
line with what came back.

  overlong HOST PORT MESSAGE_HEX EXTRA_BYTES
      a valid message, then EXTRA_BYTES more on the same stream (as fast as
      flow control lets it), until the server answers or resets the stream
  trickle HOST PORT MESSAGE_HEX TIMEOUT INTERVAL_S
      `grpc-timeout: TIMEOUT`, then the framed message one byte every
      INTERVAL_S seconds; never ends the stream on its own

Output: {"status": grpc-status or null, "message": grpc-message, "reset":
error code of an RST_STREAM or null, "sent": body bytes sent,
"seconds": from the headers to the answer or the reset}.
"""
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events

PATH = "/inference.GRPCInferenceService/ModelInfer"


def connect(host, port):
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def start(sock, conn, extra_headers=()):
    sid = conn.get_next_available_stream_id()
    headers = [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "router"),
               ("content-type", "application/grpc"), ("te", "trailers"), *extra_headers]
    conn.send_headers(sid, headers)
    sock.sendall(conn.data_to_send())
    return sid


class Outcome:
    def __init__(self):
        self.status = None
        self.message = None
        self.reset = None
        self.closed = False
        self.ack = []

    def feed(self, events, sid):
        for ev in events:
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and ev.stream_id == sid:
                h = dict(ev.headers)
                if "grpc-status" in h:
                    self.status = int(h["grpc-status"])
                    self.message = h.get("grpc-message", "")
                if ev.stream_ended is not None:
                    self.closed = True
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                self.closed = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                self.reset = int(ev.error_code)
                self.closed = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True
            elif isinstance(ev, h2.events.DataReceived):
                if ev.flow_controlled_length:
                    self.ack.append((ev.stream_id, ev.flow_controlled_length))


def pump(sock, conn, out, sid, timeout):
    """Reads what the server sent (waiting up to `timeout` s); False once the connection closed."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(1 << 16)
    except (socket.timeout, BlockingIOError):
        return True
    except OSError:
        out.closed = True
        return False
    if not data:
        out.closed = True
        return False
    out.feed(conn.receive_data(data), sid)
    for stream_id, n in out.ack:
        try:
            conn.acknowledge_received_data(n, stream_id)
        except Exception:
            pass
    out.ack.clear()
    pending = conn.data_to_send()
    if pending:
        sock.sendall(pending)
    return True


def overlong(host, port, message_hex, extra):
    msg = bytes.fromhex(message_hex)
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    sock, conn = connect(host, port)
    sid = start(sock, conn)
    out = Outcome()
    t0 = time.monotonic()
    sent = 0
    chunk = b"\x00" * 16384
    todo = [body]
    remaining = extra
    while not out.closed:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if window <= 0 or (not todo and remaining <= 0):
            if not pump(sock, conn, out, sid, 5.0 if remaining <= 0 else 0.2):
                break
            if remaining <= 0 and not todo and out.status is None and out.reset is None:
                # Everything sent and nothing came back in 5 s: stop waiting.
                break
            continue
        if todo:
            piece = todo[0][:window]
            todo[0] = todo[0][len(piece):]
            if not todo[0]:
                todo.pop(0)
        else:
            piece = chunk[: min(window, remaining)]
            remaining -= len(piece)
        try:
            conn.send_data(sid, piece)
            sock.sendall(conn.data_to_send())
        except Exception:
            break
        sent += len(piece)
        # Read what the server says between frames (non-blocking).
        pump(sock, conn, out, sid, 0.0001)
    print(json.dumps({"status": out.status, "message": out.message, "reset": out.reset, "sent": sent, "seconds": time.monotonic() - t0}))
    sock.close()


def trickle(host, port, message_hex, timeout, interval):
    msg = bytes.fromhex(message_hex)
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    sock, conn = connect(host, port)
    sid = start(sock, conn, [("grpc-timeout", timeout)])
    t0 = time.monotonic()
    out = Outcome()
    sent = 0
    next_at = t0
    while not out.closed and time.monotonic() - t0 < 30:
        now = time.monotonic()
        if now >= next_at and sent < len(body) - 1:
            try:
                conn.send_data(sid, body[sent:sent + 1])
                sock.sendall(conn.data_to_send())
            except Exception:
                break
            sent += 1
            next_at = now + interval
        pump(sock, conn, out, sid, max(0.001, next_at - time.monotonic()))
    print(json.dumps({"status": out.status, "message": out.message, "reset": out.reset, "sent": sent, "seconds": time.monotonic() - t0}))
    sock.close()


if __name__ == "__main__":
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "overlong":
        overlong(host, port, sys.argv[4], int(sys.argv[5]))
    elif mode == "trickle":
        trickle(host, port, sys.argv[4], sys.argv[5], float(sys.argv[6]))
    else:
        sys.exit(f"unknown mode {mode}")
