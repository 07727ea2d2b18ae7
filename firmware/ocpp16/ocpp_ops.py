# The operations a CSMS may call (OCPP 1.6J, CSMS -> charge point), each checked completely
# before anything changes, answered with a CALLRESULT payload or an Invalid (a CALLERROR).
# Runs in the OCPP thread with the station's lock held; nothing here waits for the network.
from api_text import printable
import isotime
import ocpp_config as oc
import ocpp_profiles as pf
from ocpp_profiles import Invalid, need, enum

_NOT_SUPPORTED = ("CancelReservation", "GetDiagnostics", "GetLocalListVersion", "ReserveNow",
                  "SendLocalList", "CertificateSigned", "DeleteCertificate",
                  "ExtendedTriggerMessage", "GetInstalledCertificateIds", "GetLog",
                  "InstallCertificate", "SignedUpdateFirmware")
_TRIGGERS = ("BootNotification", "Heartbeat", "StatusNotification", "MeterValues",
             "FirmwareStatusNotification")


def handle(up, action, p, now):
    # The CALLRESULT payload for CALL `action` with payload p; raises Invalid.
    op = _OPS.get(action)
    if op is None:
        if action in _NOT_SUPPORTED:
            raise Invalid("NotSupported", action + " is not supported by this charge point")
        raise Invalid("NotImplemented", "unknown action")
    if type(p) is not dict:
        raise Invalid("FormationViolation", "the payload must be an object")
    return op(up, up.station, p, now)


def _connector(p, required, allowed=(0, 1)):
    c = need(p, "connectorId", "int", required)
    return c if c is None or c in allowed else -1


def _text(p, key, limit, required=True):
    v = need(p, key, "str", required)
    if v is not None and not printable(v, limit):
        raise Invalid("PropertyConstraintViolation", key + ": 1-%d printable characters" % limit)
    return v


def _status(ok, no="Rejected"):
    return {"status": "Accepted" if ok else no}


_BUSY = {"status": "Rejected"}  # too many changes to flash just now (Station.spend)


def change_availability(up, st, p, now):
    c = _connector(p, True)
    kind = enum(p, "type", ("Inoperative", "Operative"))
    if c < 0:
        return _status(False)
    if not st.spend(now):
        return _BUSY
    return {"status": st.change_availability(kind == "Operative")}


def change_configuration(up, st, p, now):
    key = _text(p, "key", 50)
    value = need(p, "value", "str")
    if len(value) > 500:
        raise Invalid("PropertyConstraintViolation", "value: at most 500 characters")
    if not st.spend(now):
        return _BUSY
    return {"status": st.config.change(key, value)}


def clear_cache(up, st, p, now):
    return _status(True)  # no authorization cache is kept: there is nothing to clear


def clear_charging_profile(up, st, p, now):
    pid = need(p, "id", "int", False)
    c = need(p, "connectorId", "int", False)
    purpose = enum(p, "chargingProfilePurpose", pf.PURPOSES, False)
    stack = need(p, "stackLevel", "int", False)
    if not st.spend(now):
        raise Invalid("InternalError", "too many changes just now: try again in 10 s")
    gone = st.smart.profiles.clear(pid, c, None if purpose is None else pf.PURPOSES.index(purpose),
                             stack)
    if gone is None:
        raise Invalid("InternalError", "flash refused the change")
    return _status(gone > 0, "Unknown")


def data_transfer(up, st, p, now):
    _text(p, "vendorId", 255)
    return {"status": "UnknownVendorId"}


def get_composite_schedule(up, st, p, now):
    c = _connector(p, True)
    duration = need(p, "duration", "int")
    unit = enum(p, "chargingRateUnit", ("A", "W"), False)
    if duration < 0:
        raise Invalid("PropertyConstraintViolation", "duration must be 0 or more")
    if c < 0:
        return _status(False)
    watts = unit == "W"
    periods = st.smart.composite(min(duration, 7 * 86400), watts)
    schedule = {"duration": duration, "chargingRateUnit": "W" if watts else "A",
                "chargingSchedulePeriod": [{"startPeriod": s, "limit": v} for s, v in periods]}
    out = {"status": "Accepted", "connectorId": c, "chargingSchedule": schedule}
    start = st.stamp()
    if start:
        out["scheduleStart"] = schedule["startSchedule"] = start
    return out


def get_configuration(up, st, p, now):
    keys = need(p, "key", "list", False)
    if keys is not None and len(keys) > oc.MAX_KEYS:
        raise Invalid("PropertyConstraintViolation", "at most %d keys" % oc.MAX_KEYS)
    known, unknown = st.config.read(keys)
    out = {"configurationKey": known}
    if unknown:
        out["unknownKey"] = [k if printable(k, 50) else "?" for k in unknown]
    return out


def remote_start(up, st, p, now):
    tag = _text(p, "idTag", 20)
    c = _connector(p, False, (1,))
    profile = need(p, "chargingProfile", "obj", False)
    if profile is not None:
        # Only a TxProfile belongs here: anything else is Rejected, before a check that
        # holds only for other purposes (a transactionId) could make it a CALLERROR.
        if enum(profile, "chargingProfilePurpose", pf.PURPOSES) != "TxProfile":
            return _status(False)
        profile = pf.parse(profile)
    # Not while the boot is Pending (OCPP 1.6 section 4.2): no energy before Accepted.
    if c == -1 or not up.accepted or st.tx is not None or st.inoperative or \
            not st.spend(now):
        return _status(False)
    st.remote_start(tag, profile, now)
    return _status(True)


def remote_stop(up, st, p, now):
    tid = need(p, "transactionId", "int")
    tx = st.tx
    ok = up.accepted and tx is not None and st.ids.get(tx[0]) == tid  # not while Pending
    return _status(ok and st.stop("Remote", now))


def reset(up, st, p, now):
    up.reset = enum(p, "type", ("Soft", "Hard"))
    return _status(True)


def set_charging_profile(up, st, p, now):
    c = need(p, "connectorId", "int")
    profile = pf.parse(need(p, "csChargingProfiles", "obj"))
    purpose = profile.purpose
    if purpose == pf.CP_MAX:
        ok = c == 0 and st.smart.profile_fits(profile)
    elif purpose == pf.TX_DEFAULT:
        ok = c in (0, 1)
    else:  # a TxProfile belongs to the transaction in progress
        tx = st.tx
        ok = c == 1 and tx is not None and profile.tx in (None, st.ids.get(tx[0]))
        if ok:
            profile.tx = tx[0]
    if ok and purpose != pf.TX and not st.spend(now):
        return _BUSY
    return _status(ok and st.smart.profiles.add(profile))


def trigger_message(up, st, p, now):
    kind = need(p, "requestedMessage", "str")
    c = _connector(p, False)
    if kind not in _TRIGGERS:
        if kind == "DiagnosticsStatusNotification":
            return {"status": "NotImplemented"}
        raise Invalid("PropertyConstraintViolation", "requestedMessage has an unknown value")
    if c == -1:
        return _status(False)
    up.trigger(kind, c)
    return _status(True)


def update_firmware(up, st, p, now):
    # location: the release file's URL (OCPP 1.6 carries no signature; the release file
    # holds the signed manifest, and the file is beside it: docs/ota.md, "OCPP").
    from update_job import url_ok
    location = need(p, "location", "str")
    at = isotime.parse(need(p, "retrieveDate", "str"))
    need(p, "retries", "int", False)  # one attempt: a failure is reported (DownloadFailed)
    need(p, "retryInterval", "int", False)
    if at is None:
        raise Invalid("PropertyConstraintViolation", "retrieveDate: an ISO 8601 date-time")
    if not url_ok(location):
        raise Invalid("PropertyConstraintViolation", "location: an http:// or https:// URL")
    u = up.agent.updater
    if u is None:
        raise Invalid("NotSupported", "this charge point takes no updates")
    unix = st.unix_ms()
    if not u.request_release(location, at * 1000 - unix if unix is not None else 0, now):
        raise Invalid("InternalError", "an update is in progress")
    return {}


def unlock_connector(up, st, p, now):
    need(p, "connectorId", "int")
    return {"status": "NotSupported"}  # a tethered cable: there is no lock to open


_OPS = {"ChangeAvailability": change_availability, "ChangeConfiguration": change_configuration,
        "ClearCache": clear_cache, "ClearChargingProfile": clear_charging_profile,
        "DataTransfer": data_transfer, "GetCompositeSchedule": get_composite_schedule,
        "GetConfiguration": get_configuration, "RemoteStartTransaction": remote_start,
        "RemoteStopTransaction": remote_stop, "Reset": reset,
        "SetChargingProfile": set_charging_profile, "TriggerMessage": trigger_message,
        "UnlockConnector": unlock_connector, "UpdateFirmware": update_firmware}
