"""The orchestrator's Slack notifier: the shared client of ``services/common/slack.py``."""

from services.common.slack import COLOURS, MAX_BLOCKS, MAX_SECTION_TEXT, SlackClient, SlackDelivery

SlackNotifier = SlackClient

__all__ = ["COLOURS", "MAX_BLOCKS", "MAX_SECTION_TEXT", "SlackClient", "SlackDelivery", "SlackNotifier"]
