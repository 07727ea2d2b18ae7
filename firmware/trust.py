# The agent's one TLS check, for MQTT (mqtt_client.py) and HTTPS webhooks (webhook.py):
# the server's certificate must chain to the installation's CA (config "ca_file", DER, see
# docs/esp32.md) and name the host that was dialled (mbedTLS checks server_hostname, and
# refuses a CERT_REQUIRED client connection without one).


def context(ca_file):
    import ssl  # micropython-lib's, over the built-in tls (absent where TLS is not built)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except OSError:
        raise OSError("ca_file %s cannot be read" % ca_file)
    except ValueError:  # mbedTLS could not parse it (MicroPython's own builds have no PEM)
        raise OSError("ca_file %s is not a DER certificate (openssl x509 -outform der)"
                      % ca_file)
    return ctx


def wrap(ctx, sock, host):
    # The handshake, its failures as one line of OSError each.
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ValueError as e:  # the certificate check (mbedTLS: one line per reason)
        raise OSError("TLS: certificate of %s refused: %s" % (host, " ".join(str(e).split())))
    except OSError as e:  # a reset or a timeout: often a plain-TCP port
        raise OSError("TLS: no handshake with %s (%s): is it a TLS port?" % (host, e))
