"""The API's bodies as typed models, for /openapi.json and the checks FastAPI makes on the way
in (docs/cloud.md). Request models check only the shape; the charger judges the values (a
value of the wrong type in a setting is its 422 INVALID_SETTING_VALUE, not ours), so those
fields accept anything and say in the document what the charger expects. Unknown fields are
passed on for the charger to refuse, as it would over MQTT.
"""
from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from tools.cloud.contract import CODES

WEBHOOK_EVENTS = ("push.completed", "push.failed", "device.connected", "device.disconnected")
ActionState = Literal["acknowledged", "completed", "failed", "cancelled"]


class Open(BaseModel):
    """A response body: the charger may add fields."""
    model_config = ConfigDict(extra="allow")


class Body(BaseModel):
    """A request body: unknown fields are passed on to the charger, which refuses them (400),
    so the document says there are none."""
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})


# -- requests
class SettingValue(Body):
    value: Any = Field(json_schema_extra={"type": "number"},
                       description="kW for max_charge_rate and failsafe_charge_rate (0-50)")
    unit: Any = Field(json_schema_extra={"type": "string"}, examples=["kw"])


SettingsBody = Dict[str, SettingValue]


class CommandAction(Body):
    command: str = Field(examples=["charge", "idle"])
    parameters: Optional[Dict[str, Any]] = Field(None, json_schema_extra={
        "maxProperties": 0, "additionalProperties": False}, description="none: {} or null")
    execution: Any = Field(None, json_schema_extra={"type": "string"},
                           description='"immediate" (or ["immediate"])')


class CommandBody(Body):
    action: CommandAction
    onConflict: Optional[str] = Field(None, examples=["cancel_and_replace"])
    actionId: Optional[str] = Field(None, description="1-64 of a-z A-Z 0-9 _-.: (the service "
                                    "makes one, act_..., when absent)")


class LimitValue(Body):
    value: Any = Field(json_schema_extra={"type": "number"})
    unit: Any = Field(json_schema_extra={"type": "string"}, examples=["a", "kw"])


class LimitBody(Body):
    limit: Optional[LimitValue] = Field(description="null clears the limit")
    ttl: Any = Field(None, json_schema_extra={"type": "number"}, description="s, 1-3600")
    source: Optional[str] = None


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="http:// or https://", examples=["https://example.com/hooks"])
    events: List[str] = Field(examples=[list(WEBHOOK_EVENTS)],
                              description="any of " + ", ".join(WEBHOOK_EVENTS))


# -- responses
class Meta(BaseModel):
    requestId: str
    timestamp: str
    path: str
    latencyMs: float


class Error(BaseModel):
    code: Literal[CODES]
    message: str
    details: Dict[str, Any]


class ErrorEnvelope(BaseModel):
    success: Literal[False]
    error: Error
    meta: Meta


class Sync(BaseModel):
    available: bool
    lastPulledAt: Optional[str]


class ReadMetadata(Open):
    source: Literal["cache", "live", "fallback"]
    deviceSource: Optional[str] = Field(description="what the charger said: live, projection")


class DeviceRead(Open):
    id: str
    deviceType: Literal["ev_charger"]
    metadata: ReadMetadata
    state: Dict[str, Any]
    settings: Dict[str, Any]
    sync: Sync


class DeviceSummary(BaseModel):
    id: str
    deviceType: Literal["ev_charger"]
    online: bool
    status: Optional[str]
    lastPulledAt: Optional[str]


class Action(Open):
    id: str
    deviceId: str
    deviceType: Literal["ev_charger"]
    command: str
    parameters: None
    state: ActionState
    createdAt: Optional[str]


class SettingsResult(Open):
    deviceId: str
    updated: List[str]


class LimitResult(Open):
    deviceId: str


class Webhook(BaseModel):
    id: str
    url: str
    events: List[str]
    createdAt: str


class WebhookCreated(Webhook):
    secret: str = Field(description="whsec_...: verify deliveries with it (Standard Webhooks)")


class Health(BaseModel):
    broker: bool = Field(description="connected to a broker")
    brokerAddress: str = Field(description="the broker (of the --broker list) in use or "
                                           "being tried", examples=["127.0.0.1:1883"])


def envelope(name, data_type):
    """The success envelope around `data_type`, as a model named `name`."""
    return type(name, (BaseModel,), {"__annotations__": {
        "success": Literal[True], "data": data_type, "meta": Meta}})


ReadEnvelope = envelope("ReadEnvelope", DeviceRead)
ListEnvelope = envelope("ListEnvelope", List[DeviceSummary])
SettingsEnvelope = envelope("SettingsEnvelope", SettingsResult)
ActionEnvelope = envelope("ActionEnvelope", Action)
LimitEnvelope = envelope("LimitEnvelope", LimitResult)
WebhookEnvelope = envelope("WebhookEnvelope", WebhookCreated)
WebhookListEnvelope = envelope("WebhookListEnvelope", List[Webhook])
DeletedEnvelope = envelope("DeletedEnvelope", Dict[str, Any])
HealthEnvelope = envelope("HealthEnvelope", Health)
