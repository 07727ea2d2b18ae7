"""The bench's Modbus meter: a real peer for the firmware's Modbus RTU master.

A pymodbus server (its RTU framer parses and checks every request the firmware sends, and
builds every reply) on a loopback TCP socket that carries raw RTU frames: the simulated
board's serial port (boards/sim/sim_serial.py) is a socket to it. It holds the bench's phase
currents (dA), power (W) and energy (Wh) in the registers of the chosen model and answers
only its own bus address, as a meter on an RS485 line does.

The register maps below are written from the manufacturers' documents on their own (the
sources are beside firmware/meters/meter_models.py), in pymodbus's terms, and never derived
from the firmware's table: a wrong row there reads wrong values here, and its test fails.

Faults (`fault`, until set back to None), for the tests, the CLI and the page:
  "crc"        every reply's CRC is broken (its last byte flipped)
  "silent"     no reply at all
  "address"    replies come from the next bus address
  "exception"  every read is refused with exception 06, SERVER DEVICE BUSY
A meter of another model than the firmware's is `MeterPeer("B23", ...)` against a charger
configured for "SDM630": its registers are not there (exception 02, ILLEGAL DATA ADDRESS).
"""
import asyncio
import threading

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

FAULTS = ("crc", "silent", "address", "exception")
_T = ModbusClientMixin.DATATYPE

# model: (register block "ir" input / "hr" holding, word order, {quantity: (register,
# encoding, register units per bench unit)}). Bench units: dA, W, Wh.
# Eastron SDM630-Modbus V2 and SDM72D-M-2: 30007/30009/30011 phase currents A, 30053 total
# system power W, 30073 import kWh.
_EASTRON_3P = ("ir", "big", {"i1": (6, _T.FLOAT32, 0.1), "i2": (8, _T.FLOAT32, 0.1),
                             "i3": (10, _T.FLOAT32, 0.1), "p": (52, _T.FLOAT32, 1),
                             "e": (72, _T.FLOAT32, 0.001)})
MODELS = {
    # Eastron SDM120 protocol: 30007 current A, 30013 active power W, 30073 import kWh.
    "SDM120": ("ir", "big", {"i1": (6, _T.FLOAT32, 0.1), "p": (12, _T.FLOAT32, 1),
                             "e": (72, _T.FLOAT32, 0.001)}),
    "SDM630": _EASTRON_3P,
    "SDM72D-M-2": _EASTRON_3P,
    # ABB B23 manual 2CMC485003M0201 ch. 9: 0x5B0C.. currents U32 0.01 A, 0x5B14 active
    # power S32 0.01 W, 0x5000 active import U64 0.01 kWh; high word first.
    "B23": ("hr", "big", {"i1": (0x5B0C, _T.UINT32, 10), "i2": (0x5B0E, _T.UINT32, 10),
                          "i3": (0x5B10, _T.UINT32, 10), "p": (0x5B14, _T.INT32, 100),
                          "e": (0x5000, _T.UINT64, 0.1)}),
    # Carlo Gavazzi EM330/EM340 protocol: 0x000C.. A x1000, 0x0028 W x10, 0x0034 kWh x10,
    # INT32 with the low word first.
    "EM340": ("ir", "little", {"i1": (0x0C, _T.INT32, 100), "i2": (0x0E, _T.INT32, 100),
                               "i3": (0x10, _T.INT32, 100), "p": (0x28, _T.INT32, 10),
                               "e": (0x34, _T.INT32, 0.01)}),
}


class MeterPeer:
    def __init__(self, model, address=1):
        self.model = model
        self.address = address
        self.block, self.word_order, self.registers = MODELS[model]
        self.current_da = [0, 0, 0]
        self.power_w = 0
        self.energy_wh = 0
        self.fault = None
        self.requests = 0  # requests pymodbus parsed (every one passed its RTU checks)
        self.answered = 0  # replies that went out on the line
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._to_us = False

    def set(self, current_da=None, power_w=None, energy_wh=None):
        if current_da is not None:
            self.current_da = list(current_da) + [0] * (3 - len(current_da))
        if power_w is not None:
            self.power_w = power_w
        if energy_wh is not None:
            self.energy_wh = energy_wh

    def start(self):
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True,
                         name="meter-peer").start()
        if not ready.wait(10) or self.port is None:
            raise RuntimeError("the bench meter did not start")
        return self

    def close(self):
        # Once: a rig's owner and the test's fixture may both close it.
        server, self._server = self._server, None
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- the register image, refreshed from the bench's values at every read
    def _device(self):
        blocks = {"hr": [], "ir": []}
        for reg, encoding, _ in self.registers.values():
            words = len(ModbusClientMixin.convert_to_registers(0, encoding))
            blocks[self.block].append(SimData(reg, count=words, datatype=DataType.REGISTERS))
        for name, block in blocks.items():
            if not block:  # the other register type: nothing readable there
                block.append(SimData(0, datatype=DataType.INVALID))
        bits = [SimData(0, datatype=DataType.BITS, values=False)]
        # id 0: the image answers any address; _trace_packet lets out only our own.
        return SimDevice(id=0, simdata=(bits, bits, sorted(blocks["hr"], key=_address),
                                        sorted(blocks["ir"], key=_address)),
                         action=self._action)

    def _bench_value(self, name):
        return {"i1": self.current_da[0], "i2": self.current_da[1],
                "i3": self.current_da[2], "p": self.power_w, "e": self.energy_wh}[name]

    async def _action(self, function, start, address, count, registers, values):
        if self.fault == "exception":
            return ExcCodes.DEVICE_BUSY
        for name, (reg, encoding, per_unit) in self.registers.items():
            v = self._bench_value(name) * per_unit
            if encoding != _T.FLOAT32:
                v = round(v)
            words = ModbusClientMixin.convert_to_registers(v, encoding, self.word_order)
            registers[reg - start:reg - start + len(words)] = words
        return None

    # -- the line: only our address answers; faults
    def _trace_pdu(self, sending, pdu):
        if not sending:
            self.requests += 1
            self._to_us = pdu.dev_id == self.address
        elif self.fault == "address":
            pdu.dev_id = self.address % 247 + 1
        return pdu

    def _trace_packet(self, sending, data):
        if not sending:
            return data
        if not self._to_us or self.fault == "silent":
            return b""
        self.answered += 1
        if self.fault == "crc":
            return data[:-1] + bytes((data[-1] ^ 0xFF,))
        return data

    def _serve(self, ready):
        asyncio.set_event_loop(self._loop)

        async def start():
            self._server = ModbusTcpServer(
                self._device(), framer=FramerType.RTU, address=("127.0.0.1", 0),
                trace_pdu=self._trace_pdu, trace_packet=self._trace_packet)
            await self._server.serve_forever(background=True)
            self.port = self._server.transport.sockets[0].getsockname()[1]
            ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._loop.close()


def _address(simdata):
    return simdata.address
