"""A heap too fragmented for a reply or a state report (seen at 56K, the ESP32's first heap,
during a burst of requests): built once more after a collection, or left for the next turn,
never a MemoryError that costs the uplink its connection and queued requests their replies."""
import json

from tools.bench.rig import InProcessRig

import api_text  # the firmware's; tools.bench.rig put it on the path


class Fragmented:
    """json.dumps that fails the first `fails` times, as a fragmented heap would."""

    def __init__(self, fails):
        self.fails = fails
        self.real = json.dumps

    def __call__(self, obj):
        if self.fails:
            self.fails -= 1
            raise MemoryError("memory allocation failed, allocating 1136 bytes")
        return self.real(obj)


def test_a_reply_is_built_again_after_a_collection(tmp_path, monkeypatch):
    rig = InProcessRig(str(tmp_path))
    try:
        monkeypatch.setattr(api_text.json, "dumps", Fragmented(1))
        reply = json.loads(rig.agent.handle("read", b'{"requestId": "m-1"}', rig.bench.t))
        assert reply["success"] and reply["meta"]["requestId"] == "m-1"
    finally:
        rig.close()


def test_a_state_report_without_room_waits_for_the_next_turn(tmp_path, monkeypatch):
    rig = InProcessRig(str(tmp_path))
    try:
        published = []
        publish = lambda kind, payload, retain: published.append(kind)  # noqa: E731
        rig.agent.report_again()
        monkeypatch.setattr(api_text.json, "dumps", Fragmented(2))  # the retry fails too
        rig.agent.flush(publish, rig.bench.t)  # no MemoryError out of it
        assert "state" not in published
        rig.agent.flush(publish, rig.bench.t)  # the next turn: room again
        assert published.count("state") == 1
    finally:
        rig.close()
