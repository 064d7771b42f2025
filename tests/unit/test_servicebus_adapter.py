"""The Service Bus adapter with the real SDK: field mapping, backend choice, errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.servicebus import ServiceBusClient

from shared.adapters import servicebus
from shared.adapters.local_broker import LocalBroker
from shared.adapters.servicebus import AzureServiceBus, to_service_bus_message
from shared.config import get_settings
from shared.errors import NotFound, UpstreamError
from shared.messaging import STRIPE_EVENTS_QUEUE, OutboundMessage
from tests.conftest import free_port


def emulator_connection_string(port: int) -> str:
    """A connection string for a plain-AMQP endpoint on 127.0.0.1 (nothing listens there)."""
    return (
        f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=a2V5;"
        "UseDevelopmentEmulator=true"
    )


@pytest.fixture
def settings_env(monkeypatch):
    """Set app settings for one test; the cached settings and backend are reset around it."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        servicebus.reset()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()
    servicebus.reset()


class TestMessageMapping:
    def test_every_field_reaches_the_sdk_message(self):
        at = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
        sdk = to_service_bus_message(
            OutboundMessage(
                "evt_123",
                body=b'{"id": "evt_123"}',
                session_id="cus_9",
                subject="invoice.paid",
                application_properties={"traceparent": "00-a-b-01"},
                scheduled_enqueue_time=at,
            )
        )
        assert sdk.message_id == "evt_123"
        assert sdk.session_id == "cus_9"
        assert sdk.content_type == "application/json"
        assert sdk.subject == "invoice.paid"
        assert sdk.application_properties == {"traceparent": "00-a-b-01"}
        assert sdk.scheduled_enqueue_time_utc == at
        assert b"".join(sdk.body) == b'{"id": "evt_123"}'


class TestAzureBackend:
    def test_an_unreachable_namespace_is_a_retryable_upstream_error(self):
        client = ServiceBusClient.from_connection_string(
            emulator_connection_string(free_port()), retry_total=0
        )
        backend = AzureServiceBus(client)
        try:
            with pytest.raises(UpstreamError) as caught:
                backend.send(STRIPE_EVENTS_QUEUE, [OutboundMessage("e1", b"{}", session_id="s")])
        finally:
            backend.close()
        assert str(caught.value) == ("[servicebus] service bus send on queue stripe-events failed")
        assert caught.value.retryable

    def test_an_unknown_queue_is_not_found_before_any_call(self):
        backend = AzureServiceBus(
            ServiceBusClient.from_connection_string(emulator_connection_string(free_port()))
        )
        with pytest.raises(NotFound, match="queue 'orders' does not exist"):
            backend.send("orders", [OutboundMessage("e1", b"{}")])
        backend.close()


class TestBackendChoice:
    def test_a_connection_string_selects_service_bus(self, services, settings_env):
        settings_env(ServiceBusConnection=emulator_connection_string(free_port()))
        assert isinstance(servicebus.get_sender(), AzureServiceBus)

    def test_a_namespace_selects_service_bus(self, services, settings_env):
        settings_env(
            ServiceBusConnection__fullyQualifiedNamespace="advisoros-dev.servicebus.windows.net"
        )
        assert isinstance(servicebus.get_sender(), AzureServiceBus)

    def test_without_a_namespace_the_local_broker_is_used(self, services, settings_env):
        settings_env()
        assert isinstance(servicebus.get_sender(), LocalBroker)
