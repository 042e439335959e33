"""Checks of observability/, dashboards/ and alerts/ with the real Prometheus and Alertmanager tools."""
