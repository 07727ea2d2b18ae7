"""Certificates and credentials made by the tests: a CA and a server certificate it signs
for 127.0.0.1 and localhost, a second CA with such a server certificate of its own (an
impostor), a certificate of the first CA for another host name, and a Mosquitto password
file."""
import datetime
import ipaddress
import os
import pwd
import shutil
import subprocess
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _cert(subject, key, issuer, issuer_key, ca, hosts=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - DAY).not_valid_after(now + 30 * DAY)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if hosts:
        b = b.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    """Files in a folder the broker can read (Mosquitto started as root runs as `mosquitto`)."""

    def __init__(self, hosts=("127.0.0.1", "localhost"), users=None):
        self.dir = tempfile.mkdtemp(prefix="pki-")
        os.chmod(self.dir, 0o755)
        keys = {}
        for label in ("ca", "rogue"):
            keys[label] = _key()
            ca = _cert("evse test " + label, keys[label], "evse test " + label, keys[label], True)
            self._write(label + ".pem", ca.public_bytes(serialization.Encoding.PEM))
            self._write(label + ".der", ca.public_bytes(serialization.Encoding.DER))
        for label, issuer, names in (("ca", "ca", hosts), ("rogue", "rogue", hosts),
                                     ("misnamed", "ca", ["broker.invalid"])):
            key = _key()
            cert = _cert(names[0], key, "evse test " + issuer, keys[issuer], False, names)
            self._write(label + "-server.pem", cert.public_bytes(serialization.Encoding.PEM))
            self._write(label + "-server.key", key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption()))
        self.password_file = None
        if users:
            self.password_file = self.path("passwords")
            for i, (user, password) in enumerate(sorted(users.items())):
                subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) +
                               [self.password_file, user, password], check=True,
                               capture_output=True)
            self._readable(self.password_file)

    def path(self, name):
        return os.path.join(self.dir, name)

    def server(self, label="ca"):
        """(CA, certificate, key) for Broker(tls=...): "ca" (good), "rogue" (another CA's),
        "misnamed" (the good CA's, for another host name)."""
        return self.path("ca.pem"), self.path(label + "-server.pem"), self.path(label +
                                                                                 "-server.key")

    def _write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        self._readable(self.path(name))

    @staticmethod
    def _readable(path):
        os.chmod(path, 0o640)
        if os.geteuid() == 0:
            try:
                os.chown(path, 0, pwd.getpwnam("mosquitto").pw_gid)
            except KeyError:  # no mosquitto user: the broker keeps running as root
                pass

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)
