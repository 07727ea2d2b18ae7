"""A CA certificate a person hands the project (make sim --ca and --ocpp-ca, evctl --ca,
make deploy's ca_file and ocpp.ca_file), checked once, at start: PEM or DER, as the agent
takes it (firmware/uplink/trust.py finds the certificates, cryptography parses each one).

A file that is no certificate is one line before anything starts, not an agent that
retries its connection for ever with the same complaint.
"""
from cryptography import x509

from tools.paths import cpython_paths

cpython_paths()
import trust  # noqa: E402  (the firmware's: what the agent will load from the file)


def problem(path):
    """None if `path` holds what the agent takes as a CA, else why not (one sentence)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return "CA file %s cannot be read (%s)" % (path, e.strerror or e)
    try:
        found = trust.certificates(data)
        for der in found:
            x509.load_der_x509_certificate(der)
    except ValueError:
        found = None
    if not found:
        return "CA file %s holds no certificate (PEM: BEGIN CERTIFICATE, or DER)" % path
    return None
