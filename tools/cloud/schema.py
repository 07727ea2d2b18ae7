"""The tables, as SQLAlchemy Core sees them for its queries (docs/cloud.md, "What is where").

The migrations (tools/cloud/migrations) build the database; these are what the queries are
written against, and host_tests/test_cloud_store.py checks that the two agree. Times are Unix
seconds (floats): the same on SQLite and PostgreSQL. Everything a replica must share is
here; nothing here is per replica.
"""
from sqlalchemy import (JSON, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData,
                        String, Table, Text, UniqueConstraint)

metadata = MetaData()

# Every charger ever seen on the broker: its last state and whether it is connected.
devices = Table(
    "devices", metadata,
    Column("id", String(128), primary_key=True),
    Column("state", JSON),  # the last device read it reported (None: only availability yet)
    Column("pulled_at", Float),  # when that read was taken (Unix s)
    Column("online", Boolean, nullable=False, default=False),
    Column("changed_at", Float),  # when online last changed
    Column("first_seen_at", Float, nullable=False),
)

# API keys: only a hash is stored. A key sees every charger, or those in key_devices.
api_keys = Table(
    "api_keys", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(128), nullable=False, default=""),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 hex of the key
    Column("all_devices", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

key_devices = Table(
    "key_devices", metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"),
           primary_key=True),
    Column("device_id", String(128), primary_key=True),
)

# Actions as the chargers report them (replies, events, state); ids are the charger's.
actions = Table(
    "actions", metadata,
    Column("device_id", String(128), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("command", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("body", JSON, nullable=False),  # the action as GET /actions/{id} shows it
    Column("updated_at", Float, nullable=False),  # when the cloud last changed it
    Index("actions_by_id", "id"),
)

# Every event taken in, once (a replayed or replicated delivery of the same id is dropped).
events = Table(
    "events", metadata,
    Column("device_id", String(128), primary_key=True),
    Column("id", String(128), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("body", JSON, nullable=False),
    Column("received_at", Float, nullable=False),
)

webhooks = Table(
    "webhooks", metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("events", JSON, nullable=False),  # the event types it wants
    Column("secret", String(80), nullable=False),  # whsec_...: needed to sign, so not hashed
    Column("created_at", Float, nullable=False),
)

# The outbox: one row per (event, endpoint), written in the event's own transaction.
deliveries = Table(
    "deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", String(40), ForeignKey("webhooks.id", ondelete="CASCADE"),
           nullable=False),
    Column("event_id", String(128), nullable=False),  # webhook-id: the same on every attempt
    Column("body", Text, nullable=False),  # the exact bytes sent (and signed)
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),  # due from then
    Column("lease_until", Float),  # claimed by a sender until then
    Column("delivered_at", Float),
    Column("gave_up_at", Float),
    Column("last_error", Text),
    UniqueConstraint("webhook_id", "event_id", name="deliveries_once"),
    Index("deliveries_due", "delivered_at", "gave_up_at", "next_at"),
)
