"""JSON from outside a tool (an HTTP body, an MQTT payload, a command-line value, a file a
person wrote), parsed with one rule for every tool: whatever json.loads cannot take is a
ValueError, so one `except ValueError` answers every malformed input.

json.loads recurses once per nested array or object and past Python's recursion limit raises
RecursionError, which is no ValueError: 4,000 "[" (within the bench page's 4 KB body bound)
left a POST without any reply, and on an MQTT topic would end the client's network thread
(paho re-raises what a callback raises).
"""
import json


def loads(data):
    """json.loads(data) (str or bytes); ValueError for anything it cannot parse, nesting
    deeper than the parser's recursion included."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep to parse") from None
