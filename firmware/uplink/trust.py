# The agent's one TLS check, for MQTT (mqtt_client.py), HTTPS webhooks (webhook.py), wss://
# OCPP (ocpp_uplink.py) and https:// update downloads (updater.py), in the network thread:
# the server's certificate must chain to the installation's CA (config "ca_file" or
# "ocpp.ca_file", PEM or DER, see docs/esp32.md) and name the host that was dialled (mbedTLS
# checks server_hostname, and refuses a CERT_REQUIRED client connection without one).
from binascii import a2b_base64

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def certificates(data):
    # The DER certificates in a CA file's bytes: each CERTIFICATE block of a PEM file (what
    # openssl and every CA hand out; MicroPython's own mbedTLS builds parse no PEM: "invalid
    # cert"), or the file itself, DER. Other PEM blocks (a key) are no certificate.
    if b"-----BEGIN" not in data:
        return [data]
    found = []
    at = data.find(_BEGIN)
    while at >= 0:
        end = data.find(_END, at)
        if end < 0:
            break
        found.append(a2b_base64(data[at + len(_BEGIN):end]))
        at = data.find(_BEGIN, end)
    return found


def context(ca_file):
    import ssl  # micropython-lib's, over the built-in tls (absent where TLS is not built)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        with open(ca_file, "rb") as f:
            data = f.read()
    except OSError:
        raise OSError("ca_file %s cannot be read" % ca_file)
    loaded = 0
    try:
        for der in certificates(data):
            ctx.load_verify_locations(cadata=der)  # each one joins the trusted chain
            loaded += 1
    except (ValueError, OSError):  # not base64, or not a certificate (CPython: SSLError)
        loaded = 0
    if not loaded:
        raise OSError("ca_file %s is not a certificate (PEM or DER)" % ca_file)
    return ctx


def wrap(ctx, sock, host):
    # The handshake, its failures as one line of OSError each.
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ValueError as e:  # the certificate check (mbedTLS: one line per reason)
        raise OSError("TLS: certificate of %s refused: %s" % (host, " ".join(str(e).split())))
    except OSError as e:  # a reset or a timeout: often a plain-TCP port
        raise OSError("TLS: no handshake with %s (%s): is it a TLS port?" % (host, e))


def dial(host, port, ca_file, timeout_s):
    # A connected TCP socket, every call on it bounded by timeout_s; wrapped in TLS and
    # checked against ca_file when one is given (https://). Raises OSError.
    import socket
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(timeout_s)
        s.connect(addr)
        if ca_file:
            s = wrap(context(ca_file), s, host)
    except BaseException:
        s.close()
        raise
    return s
