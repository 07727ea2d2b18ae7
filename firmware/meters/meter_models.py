# Modbus meters as data: one row per model says where its phase currents, power and energy
# live and how they are encoded, and value() turns a register value into the firmware's
# integers (dA, W, Wh) with integer arithmetic only. Adding a model is adding a row
# (docs/meters.md). Read by meter_poll.Meter at setup and by its poll thread; no state.
from micropython import const
from modbus_rtu import HOLDING, INPUT

# Register encodings: IEEE-754 single float (2 registers), unsigned / signed 32-bit (2),
# unsigned 64-bit (4). Multi-register values are big-endian within each register; the
# row says whether the high or the low word comes first.
F32 = const(0)
U32 = const(1)
S32 = const(2)
U64 = const(3)
WORDS = (2, 2, 2, 4)

# A row: (name, function, low word first, values). values are, in this order, the current
# of L1, L2, L3 (-> dA, magnitude), the total active power (-> W, import positive) and the
# imported active energy (-> Wh), each (register, encoding, exponent) with
# firmware unit = register value x 10**exponent, or None where the model has none.
# Registers are protocol addresses (a manual's 30007 or 40007 is register 6).
CURRENT_L1 = const(0)
POWER = const(3)
ENERGY = const(4)
MODELS = (
    # Eastron SDM120-Modbus: input registers, floats in A / W / kWh. Eastron "SDM120-Modbus
    # Smart Meter Modbus Protocol Implementation": 30007 current, 30013 active power,
    # 30073 import active energy. Single-phase.
    ("SDM120", INPUT, False,
     ((0x0006, F32, 1), None, None, (0x000C, F32, 0), (0x0048, F32, 3))),
    # Eastron SDM630-Modbus V2: the same encoding. Eastron "SDM630-Modbus V2 User Manual",
    # protocol section: 30007/30009/30011 phase currents, 30053 total system power,
    # 30073 import active energy.
    ("SDM630", INPUT, False,
     ((0x0006, F32, 1), (0x0008, F32, 1), (0x000A, F32, 1), (0x0034, F32, 0),
      (0x0048, F32, 3))),
    # Eastron SDM72D-M-2 (the V2; the first SDM72D has no phase currents): the SDM630's
    # addresses. Eastron "SDM72D-M-2 User Manual", Modbus protocol section.
    ("SDM72D-M-2", INPUT, False,
     ((0x0006, F32, 1), (0x0008, F32, 1), (0x000A, F32, 1), (0x0034, F32, 0),
      (0x0048, F32, 3))),
    # ABB B23 (B24 alike): holding registers, integers, high word first. ABB "B23/B24 User
    # Manual" 2CMC485003M0201, chapter 9: 5B0C/5B0E/5B10 current U32 0.01 A, 5B14 active
    # power total S32 0.01 W, 5000 active import energy U64 0.01 kWh.
    ("B23", HOLDING, False,
     ((0x5B0C, U32, -1), (0x5B0E, U32, -1), (0x5B10, U32, -1), (0x5B14, S32, -2),
      (0x5000, U64, 1))),
    # Carlo Gavazzi EM340: input registers, signed 32-bit, LOW word first. Carlo Gavazzi
    # "EM330/EM340 Communication Protocol": 000C/000E/0010 A L1-L3 (x1000), 0028 W system
    # (x10), 0034 kWh (+) total (x10).
    ("EM340", INPUT, True,
     ((0x000C, S32, -2), (0x000E, S32, -2), (0x0010, S32, -2), (0x0028, S32, -1),
      (0x0034, S32, 2))),
)
# Cross-checked, never copied: SmartEVSE-3 src/meter.cpp (EMConfig), ESPEasy P078 (the
# Eastron register list per model), EVerest GenericPowermeter models, openWB's B23 module.

_POW10 = (1, 10, 100, 1000)
_MAX = const(0x3FFFFFFF)  # a small integer on a 32-bit port: beyond it, no reading


def find(name):
    for row in MODELS:
        if row[0] == name:
            return row
    return None


def _word(buf, off, words, i, low_first):
    # Register i of a value `words` registers long at buf[off:], counted from the high word.
    j = off + 2 * (words - 1 - i if low_first else i)
    return buf[j] << 8 | buf[j + 1]


def value(buf, off, encoding, low_first, exponent):
    # The value at buf[off:] x 10**exponent, rounded half away from zero; None where it is no
    # reading: a float NaN or infinity, an integer's "not available" extreme (all ones, or
    # a signed maximum or minimum: ABB and SunSpec mark missing values so), or beyond _MAX.
    words = WORDS[encoding]
    hi = _word(buf, off, words, 0, low_first)
    lo = _word(buf, off, words, 1, low_first)
    shift = 0  # a float's binary exponent
    if encoding == F32:
        e = hi >> 7 & 0xFF
        if e == 0xFF:
            return None
        if e == 0:
            return 0  # zero, or a subnormal below 1.2e-38
        raw = (hi & 0x7F | 0x80) << 16 | lo  # the 24-bit significand: m x 2**(e - 150)
        shift = e - 150
        if shift > 30:
            return None  # 2**53 and more: far beyond _MAX
        negative = hi & 0x8000
    elif encoding == S32:
        if (hi == 0x7FFF and lo == 0xFFFF) or (hi == 0x8000 and lo == 0):
            return None
        negative = hi & 0x8000
        raw = ((hi ^ 0xFFFF) << 16 | (lo ^ 0xFFFF)) + 1 if negative else hi << 16 | lo
    else:
        if encoding == U64:
            if hi or lo:
                return None  # 2**32 units and more (all ones: not available)
            hi = _word(buf, off, words, 2, low_first)
            lo = _word(buf, off, words, 3, low_first)
        if hi == 0xFFFF and lo == 0xFFFF:
            return None
        negative = False
        raw = hi << 16 | lo
    num = raw * _POW10[exponent] if exponent > 0 else raw
    den = _POW10[-exponent] if exponent < 0 else 1
    if shift > 0:
        num <<= shift
    elif shift < 0:
        den <<= -shift
    v = (2 * num + den) // (2 * den)
    if v > _MAX:
        return None
    return -v if negative else v
