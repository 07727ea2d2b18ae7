# The OCPP configuration keys (GetConfiguration / ChangeConfiguration): what the charger
# reports and what a CSMS may change. Values are strings, as OCPP carries them; a changed
# writable key is persisted (one small blob, written only when a value really changes).
import json
import persist as ps
import record

MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import",
              "Current.Offered")
# name, kind (int: a whole number >= 0, bool, list: of MEASURANDS, text), default, writable
KEYS = (
    ("AuthorizeRemoteTxRequests", "bool", "false", True),
    ("ChargeProfileMaxStackLevel", "int", "8", False),
    ("ChargingScheduleAllowedChargingRateUnit", "text", "Current,Power", False),
    ("ChargingScheduleMaxPeriods", "int", "24", False),
    ("ClockAlignedDataInterval", "int", "0", True),
    ("ConnectionTimeOut", "int", "60", True),
    ("ConnectorPhaseRotation", "text", "NotApplicable", False),
    ("GetConfigurationMaxKeys", "int", "32", False),
    ("HeartbeatInterval", "int", "300", True),
    ("LocalAuthorizeOffline", "bool", "true", True),
    ("LocalPreAuthorize", "bool", "false", False),
    ("MaxChargingProfilesInstalled", "int", "8", False),
    ("MeterValueSampleInterval", "int", "60", True),
    ("MeterValuesAlignedData", "list", "Energy.Active.Import.Register", True),
    ("MeterValuesSampledData", "list", ",".join(MEASURANDS), True),
    ("NumberOfConnectors", "int", "1", False),
    ("StopTransactionOnEVSideDisconnect", "bool", "true", False),
    ("StopTransactionOnInvalidId", "bool", "true", False),
    ("StopTxnAlignedData", "text", "", False),
    ("StopTxnSampledData", "text", "", False),
    ("SupportedFeatureProfiles", "text", "Core,SmartCharging,RemoteTrigger", False),
    ("TransactionMessageAttempts", "int", "3", True),
    ("TransactionMessageRetryInterval", "int", "30", True),
    ("UnlockConnectorOnEVSideDisconnect", "bool", "true", False),
    ("WebSocketPingInterval", "int", "60", True),
)
_INT_MAX = 86400 * 7  # no interval or timeout longer than a week
MAX_KEYS = 32  # GetConfigurationMaxKeys


def _find(name):
    # The row of key `name`, matched as OCPP compares keys (CiString50: whatever the case).
    for row in KEYS:
        if row[0] == name:
            return row
    low = name.lower()  # a CSMS's spelling: allocates, where the charger's own does not
    for row in KEYS:
        if len(row[0]) == len(name) and row[0].lower() == low:
            return row
    return None


def _valid(kind, value):
    if kind == "int":
        return 0 < len(value) <= 6 and value.isdigit() and int(value) <= _INT_MAX
    if kind == "bool":
        return value.lower() in ("true", "false")
    if kind == "list":
        return value == "" or all(m in MEASURANDS for m in value.split(","))
    return False


class Config:
    def __init__(self, persist):
        self.persist = persist
        self.changed = {}  # writable keys a CSMS changed: name -> value
        self.volatile = {}  # values set until restart (BootNotification's interval)

    def load(self):
        body = self.persist.read_blob(ps.OCPP_CONFIG)
        if body is None or body == record.CORRUPT:
            return body is None
        try:
            values = json.loads(body)
            for name in values:
                row = _find(name)
                if row and row[3] and type(values[name]) is str and _valid(row[1], values[name]):
                    self.changed[name] = values[name]
        except (ValueError, TypeError):
            return False
        return True

    def get(self, name):
        for values in (self.volatile, self.changed):
            if name in values:
                return values[name]
        return _find(name)[2]

    def number(self, name):
        return int(self.get(name))

    def flag(self, name):
        return self.get(name) == "true"

    def items(self, name):
        value = self.get(name)
        return value.split(",") if value else []

    def read(self, names):
        # GetConfiguration: (configurationKey, unknownKey). `names` None: every key.
        known = []
        unknown = []
        for name in (names if names is not None else [row[0] for row in KEYS]):
            row = _find(name) if type(name) is str else None
            if row is None:
                unknown.append(name)
            else:
                known.append({"key": row[0], "readonly": not row[3], "value": self.get(row[0])})
        return known, unknown

    def change(self, name, value):
        # ChangeConfiguration's status: Accepted, Rejected (read-only, a bad value, flash
        # refused it) or NotSupported (an unknown key).
        row = _find(name)
        if row is None:
            return "NotSupported"
        if not row[3] or not _valid(row[1], value):
            return "Rejected"
        name = row[0]
        if row[1] == "bool":
            value = value.lower()
        self.volatile.pop(name, None)
        old = self.changed.get(name)
        self.changed[name] = value
        if not self.persist.write_blob(ps.OCPP_CONFIG, json.dumps(self.changed).encode()):
            if old is None:
                del self.changed[name]
            else:
                self.changed[name] = old
            return "Rejected"
        return "Accepted"

