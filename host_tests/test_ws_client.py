"""firmware/ocpp16/ws_client.py under micropython against servers that misbehave on purpose: each
scripted server below speaks raw TCP, so it can send what no WebSocket library would."""
import base64
import hashlib
import os
import socket
import struct
import subprocess
import threading

import pytest

from tools.paths import FIRMWARE_DIRS

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(request):
    key = [line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
           if line.lower().startswith(b"sec-websocket-key:")][0]
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def frame(opcode, payload, fin=True, mask=False, rsv=0, length=None):
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if mask:
        key = b"abcd"
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def read_frame(conn):
    b0, b1 = conn.recv(1)[0], conn.recv(1)[0]
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", conn.recv(2))[0]
    key = conn.recv(4) if b1 & 0x80 else None
    data = b""
    while len(data) < n:
        data += conn.recv(n - len(data))
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return b0 & 0x0F, bool(b1 & 0x80), data


def handshake(conn, accept=True, protocol=b"ocpp1.6", status=b"101 Switching Protocols",
              extra=b""):
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(1024)
    lines = [b"HTTP/1.1 " + status, b"Upgrade: websocket", b"Connection: Upgrade"]
    if accept:
        lines.append(b"Sec-WebSocket-Accept: " + (accept_for(request) if accept is True
                                                  else accept))
    if protocol:
        lines.append(b"Sec-WebSocket-Protocol: " + protocol)
    conn.sendall(b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n")
    return request


# name -> (what the server does, what the client must report)
def _echo(conn):
    handshake(conn)
    op, masked, data = read_frame(conn)
    assert masked  # a client's frames are masked (RFC 6455 5.3)
    conn.sendall(frame(1, b"echo:" + data))
    conn.sendall(frame(9, b"pp"))  # a ping: the client answers with the same payload
    op, masked, data = read_frame(conn)
    conn.sendall(frame(1, b"pong:%d:%s" % (op, data)))
    conn.sendall(frame(1, b"[2,", fin=False) + frame(9, b"") + frame(0, b'"x"]'))
    read_frame(conn)  # the pong for the ping between the fragments


SERVERS = {
    "echo": (_echo, ["echo:hello", "pong:10:pp", '[2,"x"]']),
    "wrong accept": (lambda c: handshake(c, accept=b"AAAA"), ["OSError: WebSocket: wrong "
                                                             "Sec-WebSocket-Accept"]),
    "no subprotocol": (lambda c: handshake(c, protocol=None),
                       ["OSError: WebSocket: the server did not accept subprotocol ocpp1.6"]),
    "401": (lambda c: handshake(c, status=b"401 Unauthorized", accept=False),
            ["OSError: WebSocket: the server answered HTTP 401 (credentials refused)"]),
    "header flood": (lambda c: handshake(c, extra=b"X-Pad: 1\r\n" * 100),
                     ["OSError: WebSocket: handshake answer too long"]),
    "masked server frame": (lambda c: (handshake(c), c.sendall(frame(1, b"x", mask=True))),
                            ["OSError: WebSocket: reserved bits or a masked frame from the "
                             "server"]),
    "reserved bits": (lambda c: (handshake(c), c.sendall(frame(1, b"x", rsv=0x40))),
                      ["OSError: WebSocket: reserved bits or a masked frame from the server"]),
    "huge length": (lambda c: (handshake(c), c.sendall(frame(1, b"", length=1 << 40))),
                    ["OSError: WebSocket: frame length beyond 4 GB"]),
    "oversized": (lambda c: (handshake(c), c.sendall(frame(1, b'[2,"big-1","X",' + b"x" * 9000)),
                             c.sendall(frame(1, b"after"))),
                  ["TooLarge 9015 " + ('[2,"big-1","X",' + "x" * 9000)[:64], "after"]),
    "oversized in fragments": (lambda c: (handshake(c), [c.sendall(frame(
        1 if i == 0 else 0, b"y" * 1000, fin=i == 9)) for i in range(10)]),
        ["TooLarge 10000 " + "y" * 64]),
    "stall mid-frame": (lambda c: (handshake(c), c.sendall(b"\x81\x7e\x10")),
                        ["OSError: [Errno 110] ETIMEDOUT"]),
    "close": (lambda c: (handshake(c), c.sendall(frame(8, struct.pack("!H", 4000)))),
              ["OSError: WebSocket closed by the server (4000)"]),
    "silent handshake": (lambda c: c.recv(1024), ["OSError: [Errno 110] ETIMEDOUT"]),
}

CLIENT = r"""
import sys, select, ws_client
for port in sys.argv[1:]:
    out = []
    try:
        ws = ws_client.connect("ws://127.0.0.1:%s/ocpp/cp" % port, "ocpp1.6", limit=4096,
                               timeout=2)
        p = select.poll()
        p.register(ws.sock, select.POLLIN)
        ws.send_text(b"hello")
        while len(out) < 3:
            if not p.poll(3000):
                break
            m = ws.recv()
            if isinstance(m, ws_client.TooLarge):
                out.append("TooLarge %d %s" % (m.size, bytes(m.head).decode()))
            elif m is not None:
                out.append(bytes(m).decode())
    except OSError as e:
        out.append("OSError: %s" % (e.args[0] if isinstance(e.args[0], str) else e))
    print(port, repr(out))
"""


def serve_once(behaviour):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        try:
            behaviour(conn)
            conn.settimeout(5)
            while conn.recv(1024):  # until the client goes
                pass
        except OSError:
            pass
        finally:
            conn.close()
            srv.close()
    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def test_ws_client_against_misbehaving_servers(tmp_path):
    ports = {name: serve_once(behaviour) for name, (behaviour, _) in SERVERS.items()}
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = dict(os.environ, MICROPYPATH=":".join([".frozen"] + FIRMWARE_DIRS))
    res = subprocess.run(["micropython", str(script)] + [str(p) for p in ports.values()],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    got = {}
    for line in res.stdout.splitlines():
        port, _, out = line.partition(" ")
        got[int(port)] = eval(out)
    for name, (_, expected) in SERVERS.items():
        assert got[ports[name]] == expected, name


@pytest.mark.parametrize("url,error", [
    ("http://x/ocpp", "the URL must start with ws:// or wss://"),
    ("ws://user:pw@host/ocpp", "the URL needs a host[:port] without user information"),
    ("ws://host:80a/ocpp", "the URL needs a host[:port] without user information"),
])
def test_urls_are_checked(url, error):
    import ws_client
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        ws_client.parse_url(url)
    assert ws_client.parse_url("wss://csms.example:8443/ocpp/v16") == (
        "wss", "csms.example", 8443, "/ocpp/v16")
    assert ws_client.parse_url("ws://10.0.0.2") == ("ws", "10.0.0.2", 80, "/")
