"""Releases for updates over the air (docs/ota.md): keys, bundles and signatures.

  python -m tools.ota keygen --out release.pem        # a key pair; prints the public key
  python -m tools.ota pubkey --key release.pem        # the public key again, for the config
  python -m tools.ota bundle --out app-0.3.0.tar      # make deploy's .mpy tree as a bundle
  python -m tools.ota bundle --board sim --out ...    # make sim's charger's tree
  python -m tools.ota bundle --from DIR --out ...     # the .mpy files in DIR, as they are
  python -m tools.ota sign --key release.pem --version 0.3.0 --kind bundle app-0.3.0.tar
                                                      # -> app-0.3.0.tar.ota.json

The release file holds what an update request carries beside the URL: the manifest, as the
exact text that was signed, and its RSA PKCS#1 v1.5 SHA-256 signature in base64. The
charger holds the public keys (config "ota": {"keys": [...]}) and checks both with the
firmware's own code, which this tool runs on the result before it writes it.
"""
import argparse
import base64
import hashlib
import json
import os
import sys
import tarfile
import tempfile

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tools.device import manifest
from tools.device.deploy import DeployError, build_tree
from tools.device.flash_firmware import FlashError, is_application, load_image
from tools.paths import board_manifest, cpython_paths

cpython_paths()
import ota_bundle  # noqa: E402  the firmware's own checks
import ota_manifest  # noqa: E402
import ota_rsa  # noqa: E402

BITS = (3072, 4096)  # what the charger accepts (ota_rsa.MIN_BYTES, MAX_BYTES)


class OtaError(Exception):
    pass


def public_text(key):
    """The public key as the charger's config holds it: the modulus in base64."""
    n = key.public_key().public_numbers().n
    return base64.b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()


def load_key(path):
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise OtaError("cannot read the private key %s: %s" % (path, e))
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size not in BITS \
            or key.public_key().public_numbers().e != ota_rsa.E:
        raise OtaError("%s is not an RSA-3072 or RSA-4096 key with exponent 65537" % path)
    return key


def keygen(out, bits):
    if os.path.exists(out):
        raise OtaError("%s exists: nothing written (a release key is never overwritten)" % out)
    key = rsa.generate_private_key(public_exponent=ota_rsa.E, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the owner's only
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def describe_public(key):
    text = public_text(key)
    return ("key id %s (RSA-%d); in the charger's config:\n  \"ota\": {\"keys\": [\"%s\"]}"
            % (ota_rsa.Key(text).id, key.key_size, text))


def check_bundle(path):
    """The firmware's own archive checks over the file: [(name, size)] of its files."""
    files = []
    buf = bytearray(512)
    with open(path, "rb") as f:
        while True:
            if f.readinto(buf) != 512:
                raise OtaError("%s ends inside a member: not a bundle" % path)
            try:
                member = ota_bundle.header(buf)
            except ota_manifest.Refused as e:
                raise OtaError("%s is not a bundle: %s" % (path, e.detail))
            if member is None:
                return files
            if member[1] >= 0:
                files.append(member)
                f.seek((member[1] + 511) // 512 * 512, 1)


def check_image(path, chip):
    try:
        image = load_image(path, chip)
    except FlashError as e:
        raise OtaError(str(e))
    if not is_application(image):
        raise OtaError("%s is a full firmware (it starts with the bootloader): an update is "
                       "the application image alone (micropython.bin of a build, the .app-bin "
                       "download)" % os.path.basename(path))


def sign(key, path, version, kind, downgrade=False, chip="esp32"):
    """The release for the file at `path`, which must be what `kind` says."""
    if kind == "image":
        check_image(path, chip)
    else:
        check_bundle(path)
    return release(key, path, version, kind, downgrade)


def release(key, path, version, kind, downgrade=False):
    """{"manifest": text, "signature": base64} for the file at `path`, as it is."""
    if ota_manifest.version(version) is None:
        raise OtaError("version %r: give MAJOR.MINOR.PATCH, e.g. 0.3.0" % version)
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
            size += len(chunk)
    fields = {"version": version, "kind": kind, "size": size, "sha256": h.hexdigest(),
              "downgrade": downgrade, "key": ota_rsa.Key(public_text(key)).id}
    # The canonical text: keys sorted, no spaces. The charger checks these exact bytes.
    text = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(text, padding.PKCS1v15(), hashes.SHA256())
    # What the charger will do with it, done here first: parse, then verify.
    try:
        ota_manifest.parse(text)
    except ota_manifest.Refused as e:
        raise OtaError("the manifest would be refused: %s" % e.detail)
    if not ota_rsa.verify(ota_rsa.Key(public_text(key)), signature,
                          hashlib.sha256(text).digest()):
        raise OtaError("the signature does not verify with the firmware's code")
    return {"manifest": text.decode(), "signature": base64.b64encode(signature).decode()}


def make_bundle(out, board="esp32", march="xtensawin", source=None):
    """A board's .mpy tree as a POSIX ustar archive: sorted, dated 0, owned by no one, so the
    same sources give the same bytes. [(name, size)] of its files. The tree: make deploy's
    lib/ (esp32), the simulated board's modules as make sim runs them (sim: bytecode for
    any architecture), or the folder `source` as it is."""
    with tempfile.TemporaryDirectory() as tmp:
        lib = os.path.join(tmp, "lib")
        if source:
            lib = source
        elif board == "sim":
            for entry in manifest.files(board_manifest("sim"), port=False):
                error = manifest.compile_to(entry, lib)
                if error:
                    raise OtaError("mpy-cross " + error)
        else:
            build_tree(tmp, board, None, march)
        names = sorted(os.path.relpath(os.path.join(d, f), lib).replace(os.sep, "/")
                       for d, _, files in os.walk(lib) for f in files)
        if not names:
            raise OtaError("%s holds no files" % lib)
        with tarfile.open(out + ".tmp", "w", format=tarfile.USTAR_FORMAT) as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = os.path.getsize(os.path.join(lib, name))
                info.mode = 0o644
                with open(os.path.join(lib, name), "rb") as f:
                    tar.addfile(info, f)
    try:
        files = check_bundle(out + ".tmp")
    except OtaError as e:
        os.remove(out + ".tmp")
        raise OtaError(str(e).replace(out + ".tmp", source or out))
    os.replace(out + ".tmp", out)
    return files


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.ota", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="make a release key pair (the private key stays here)")
    k.add_argument("--out", required=True, help="the private key file to create (PEM, 0600)")
    k.add_argument("--bits", type=int, choices=BITS, default=3072)
    pk = sub.add_parser("pubkey", help="print a key's public half for the charger's config")
    pk.add_argument("--key", required=True)
    b = sub.add_parser("bundle", help="make deploy's .mpy tree as a bundle (ustar archive)")
    b.add_argument("--out", required=True)
    b.add_argument("--board", default="esp32", choices=("esp32", "sim"),
                   help="esp32: make deploy's lib/; sim: make sim's charger")
    b.add_argument("--march", default="xtensawin", help="mpy-cross architecture (esp32)")
    b.add_argument("--from", dest="source", metavar="DIR",
                   help="bundle the .mpy files in DIR (one folder deep) instead")
    s = sub.add_parser("sign", help="sign a bundle or an application image")
    s.add_argument("--key", required=True, help="the private key (PEM)")
    s.add_argument("--version", required=True, help="MAJOR.MINOR.PATCH of what FILE holds")
    s.add_argument("--kind", required=True, choices=ota_manifest.KINDS)
    s.add_argument("--allow-downgrade", action="store_true",
                   help="let chargers running a newer version install this one")
    s.add_argument("--chip", default="esp32", help="an image's chip (esptool's name)")
    s.add_argument("--out", help="the release file (default: FILE.ota.json)")
    s.add_argument("file")
    a = p.parse_args(argv)
    try:
        if a.command == "keygen":
            print("ota: wrote %s; %s" % (a.out, describe_public(keygen(a.out, a.bits))))
        elif a.command == "pubkey":
            print("ota: %s" % describe_public(load_key(a.key)))
        elif a.command == "bundle":
            files = make_bundle(a.out, a.board, a.march, a.source)
            print("ota: wrote %s: %d files, %d bytes" % (a.out, len(files),
                                                        os.path.getsize(a.out)))
        else:
            release = sign(load_key(a.key), a.file, a.version, a.kind, a.allow_downgrade,
                           a.chip)
            out = a.out or a.file + ".ota.json"
            with open(out + ".tmp", "w") as f:
                json.dump(release, f, indent=1)
                f.write("\n")
            os.replace(out + ".tmp", out)
            print("ota: wrote %s: %s" % (out, release["manifest"]))
        return 0
    except (OtaError, DeployError, OSError) as e:
        print("ota: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
