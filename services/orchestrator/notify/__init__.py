"""Outbound notifications: Slack messages for alerts and approvals."""
