"""The firmware's layers (docs/design.md, "The tree"): which folder of firmware/ may import
which. Frozen flat, a module's name is global, so its folder is known from the tree; every
import in it, at the top or inside a function, is checked against MAY_IMPORT, and a wrong
arrow fails with the module and the line. boards/ may import anything (not checked here);
nothing in firmware/ imports `machine` (test_compile.py)."""
import ast
import os

import pytest

from tools.paths import FIRMWARE, firmware_sources

# folder -> the folders its modules may import. The control core stands alone; the charger
# (requests, settings, storage) needs only the core; every uplink and site balancing sit on
# the charger; an uplink never imports another uplink, nor balancing, nor the charger an
# uplink. runner.py wires the uplinks and site balancing in by name (config.UPLINKS,
# runner.SITE: data, checked below), so that a new uplink is a folder and a registry entry.
# The Modbus meters stand on the core; the charger builds them from its config.
MAY_IMPORT = {
    "core": {"core"},
    "charger": {"core", "meters", "charger", "ota"},
    "uplink": {"core", "charger", "uplink", "ota"},
    "mqtt": {"core", "charger", "uplink", "mqtt"},
    "ocpp16": {"core", "charger", "uplink", "ocpp16"},
    "http": {"core", "charger", "uplink", "http"},
    "balancing": {"core", "charger", "balancing"},
    # The folders main has from the OTA and Modbus work (issues 27, 28): each on the core.
    # The charger reads the OTA keys of its config with ota/ (config.py), and updater.py,
    # in uplink/, runs an update with it.
    "ota": {"core", "ota"},
    "meters": {"core", "meters"},
}


def imports(source):
    """[(line, module name)] of every import statement in `source`, however deep."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def folders(sources):
    """{module name: its folder} for {module name: path}."""
    return {name: os.path.basename(os.path.dirname(path)) for name, path in sources.items()}


def wrong_arrows(sources):
    """Every import that crosses a layer the wrong way, as 'folder/module.py:line imports
    module (folder)'; a folder MAY_IMPORT does not know is one too."""
    where = folders(sources)
    wrong = []
    for name, path in sorted(sources.items()):
        folder = where[name]
        if folder not in MAY_IMPORT:
            wrong.append("%s/%s.py: folder %s has no row in MAY_IMPORT" % (folder, name, folder))
            continue
        with open(path) as f:
            text = f.read()
        for line, imported in imports(text):
            to = where.get(imported)  # None: the standard library or micropython-lib
            if to is not None and to not in MAY_IMPORT[folder]:
                wrong.append("%s/%s.py:%d imports %s (%s)" % (folder, name, line, imported, to))
    return wrong


def test_every_import_follows_the_layers():
    sources = firmware_sources()
    assert set(folders(sources).values()) == {
        d for d in os.listdir(FIRMWARE) if os.path.isdir(os.path.join(FIRMWARE, d))}
    assert wrong_arrows(sources) == []


def test_a_wrong_arrow_is_found(tmp_path):
    # The check has teeth: the core importing the MQTT uplink, inside a function, is named.
    sources = dict(firmware_sources())
    planted = tmp_path / "core" / "control.py"
    planted.parent.mkdir()
    with open(sources["control"]) as f:
        planted.write_text(f.read() + "\n\ndef _leak():\n    import mqtt_uplink\n")
    sources["control"] = str(planted)
    lines = len(planted.read_text().splitlines())
    assert wrong_arrows(sources) == ["core/control.py:%d imports mqtt_uplink (mqtt)" % lines]
    sources["stray"] = str(tmp_path / "stray" / "stray.py")
    os.makedirs(os.path.dirname(sources["stray"]))
    open(sources["stray"], "w").close()
    assert "stray/stray.py: folder stray has no row in MAY_IMPORT" in wrong_arrows(sources)


def _classes(path):
    with open(path) as f:
        return {n.name for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.ClassDef)}


def test_the_wiring_names_real_modules_and_only_it_imports_by_name():
    # runner.py builds what the config names from (module, class) pairs: each must be a
    # firmware module with that class; and no other module imports by name, so the arrows
    # above are every arrow there is.
    import config
    import runner
    sources = firmware_sources()
    where = folders(sources)
    wired = [u[1:] for u in config.UPLINKS] + [runner.SITE, runner.SITE_LOCAL]
    for module, cls in wired:
        assert module in sources and cls in _classes(sources[module]), (module, cls)
    assert [where[m] for m, _ in wired] == ["mqtt", "ocpp16", "http", "balancing",
                                            "balancing"]
    for name, path in sources.items():
        with open(path) as f:
            if "__import__(" in f.read():
                assert name == "runner", name


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_each_folder_stands_on_layers_below_it(folder):
    # No two folders may import each other: the arrows form layers, not a tangle.
    for other in MAY_IMPORT[folder] - {folder}:
        assert folder not in MAY_IMPORT.get(other, ()), (folder, other)
