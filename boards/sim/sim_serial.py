# The simulated board's RS485 port (docs/boards.md, "The serial port"): raw Modbus RTU frames
# over loopback TCP sockets to the bench's meters (tools/bench/meter_peer.py, pymodbus
# servers), one socket per meter on the bus: what is written goes to every meter, as on a
# bus, and only the one addressed answers. A frame ends where the line stays silent for
# t3.5, as a UART's read does. The
# driver-enable pin is modelled as a half-duplex transceiver behaves: bytes written while it
# is low never reach the line, and a reply read while it is high is lost (the receiver is off
# while the driver is on). ReplayPort replays replies without a line, for measurements and
# tests. Used by the meter poll thread only.
import select
import socket
from modbus_rtu import silence_us


class SimPin:
    # An output pin: value(v) sets it, value() reads it back.
    def __init__(self):
        self.level = 0

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v


class SocketPort:
    # tcp_ports: the bench's meters on this bus (one port, or a list).
    def __init__(self, tcp_ports, baudrate=9600, de=None):
        self.baudrate = baudrate
        self.de = de  # a SimPin, or None: a transceiver that turns around by itself
        self._poller = select.poll()
        self.socks = []
        self._by = {}  # what poll() names a socket by (CPython: its fd) -> the socket
        for tcp_port in tcp_ports if type(tcp_ports) is list else [tcp_ports]:
            sock = socket.socket()
            sock.connect(socket.getaddrinfo("127.0.0.1", tcp_port)[0][-1])
            sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: a frame goes out whole
            sock.setblocking(False)  # a read takes what has come (MicroPython's fills buf)
            self._poller.register(sock, select.POLLIN)
            self.socks.append(sock)
            self._by[sock if hasattr(sock, "readinto") else sock.fileno()] = sock
        self._silence_ms = (silence_us(baudrate) + 999) // 1000
        # The same calls under MicroPython and CPython (the fast tests run the master there).
        self._recv = "readinto" if hasattr(self.socks[0], "readinto") else "recv_into"
        self._send = "write" if hasattr(self.socks[0], "write") else "send"

    def write(self, buf):
        if self.de is not None and not self.de.value():
            return  # the driver is off: nothing reaches the line
        for sock in self.socks:
            send = getattr(sock, self._send)
            sent = 0
            while sent < len(buf):  # a frame fits the socket's buffer: one send, in practice
                sent += send(buf if not sent else memoryview(buf)[sent:]) or 0

    def readinto(self, buf, timeout_ms):
        got = 0
        wait = timeout_ms
        while got < len(buf):
            ready = self._poller.poll(wait)
            if not ready:
                break
            for name, _ in ready:
                sock = self._by[name]
                if got < len(buf):
                    n = getattr(sock, self._recv)(buf if not got else memoryview(buf)[got:])
                    if not n:
                        raise OSError("the bench's meter closed the line")
                    got += n
            wait = self._silence_ms  # the rest of the frame, until the line falls silent
        if self.de is not None and self.de.value():
            return 0  # the receiver was off: the reply is lost
        return got

    def close(self):
        for sock in self.socks:
            sock.close()


class ReplayPort:
    # Each write() is answered by the next of `replies`, in turn, with no line and no wait,
    # allocating nothing: what a poll through it allocates is the master's and the meter's.
    def __init__(self, replies, baudrate=9600):
        self.baudrate = baudrate
        self.de = None
        self.replies = replies
        self._next = 0
        self._pending = None

    def write(self, buf):
        self._pending = self.replies[self._next]
        self._next = (self._next + 1) % len(self.replies)

    def readinto(self, buf, timeout_ms):
        frame = self._pending
        self._pending = None
        if frame is None:
            return 0
        for i in range(len(frame)):
            buf[i] = frame[i]
        return len(frame)
