"""`realnet run` through Prefect's temporary server: patient startup, no telemetry, user settings win."""

from __future__ import annotations

from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

from flows.runner import EPHEMERAL_STARTUP_TIMEOUT_S, _patient_ephemeral_server


def test_temporary_server_waits_longer_and_sends_no_telemetry(monkeypatch):
    # Offline, the telemetry service logs an ERROR line in every run.
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    with _patient_ephemeral_server():
        assert PREFECT_SERVER_ANALYTICS_ENABLED.value() is False
        assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == EPHEMERAL_STARTUP_TIMEOUT_S


def test_settings_the_user_exported_are_left_alone(monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "33")
    with _patient_ephemeral_server():
        assert PREFECT_SERVER_ANALYTICS_ENABLED.value() is True
        assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == 33
