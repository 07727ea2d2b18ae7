# Updates over the air (docs/ota.md), frozen flat: each module keeps its global name.
for n in ("boot", "bundle", "image", "install", "manifest", "rsa", "valid"):
    module("ota_%s.py" % n)
