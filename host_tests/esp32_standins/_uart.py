# Stand-in for the ESP32's machine.UART under the unix port (machine.py hands it out): the
# RS485 bus of the Modbus meters over TCP to the bench's meters.
import _world


def _de_pin():
    # The transceiver's DE pin, from config "meters" (None: auto-direction).
    import json
    with open("config.json") as f:
        return json.load(f).get("meters", {}).get("bus", {}).get("de")


class UART:
    # The RS485 bus (v1.28.0's machine.UART as esp32_board.Rs485 uses it): what is written
    # goes over TCP to the bench's Modbus meters (STANDIN_METER_PORTS, meter_peer.py) and
    # their replies are read back. Logged: its setup, each write with the DE pin's level at
    # that moment, each flush.
    def __init__(self, uart_id, baudrate=9600, bits=8, parity=None, stop=1, tx=None, rx=None,
                 rxbuf=256, timeout=0, timeout_char=0):
        import os
        import socket
        _world.log("uart_init", uart_id, baudrate, bits, parity, stop, tx, rx, timeout,
                   timeout_char)
        self.socks = []
        for port in (os.getenv("STANDIN_METER_PORTS") or "").split(","):
            if port:
                s = socket.socket()
                s.connect(socket.getaddrinfo("127.0.0.1", int(port))[0][-1])
                s.setblocking(False)
                self.socks.append(s)
        self.rx = bytearray()
        self.de_pin = _de_pin()

    def write(self, buf):
        de = _world.pins.get(self.de_pin)
        _world.log("uart_write", len(buf), "de=%s" % de)
        if de == 0:
            return len(buf)  # the transceiver's driver is off: nothing reaches the bus
        for s in self.socks:
            s.write(buf)
        return len(buf)

    def flush(self):
        _world.log("uart_flush")

    def any(self):
        for s in self.socks:
            try:
                got = s.read(256)
            except OSError:
                got = None
            if got:
                self.rx += got
        return len(self.rx)

    def readinto(self, buf):
        self.any()
        n = min(len(buf), len(self.rx))
        if not n:
            return None  # timeout 0 and nothing there
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n
