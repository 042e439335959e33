"""COO's NATS subjects and JetStream streams, named once (DESIGN §5), with the installation's prefix."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.settings import Settings

WORK_STREAM = "COO_WORK"
EVENTS_STREAM = "COO_EVENTS"

SUBJECT_WORK = "coo.work"  # coo.work.<agent>
SUBJECT_RESULTS = "coo.results"
SUBJECT_CONTROL = "coo.control"  # coo.control.<mission>
SUBJECT_TIMELINE = "coo.timeline"  # coo.timeline.<mission>
SUBJECT_SANDBOX_EXEC = "coo.sandbox.exec"
SANDBOX_QUEUE_GROUP = "sandbox"
SUBJECT_SANDBOX_CANCEL = "coo.sandbox.cancel"

DUPLICATE_WINDOW_S = 120.0
EVENTS_MAX_AGE_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Subjects:
    """Every subject and stream name, with the installation's prefix applied."""

    settings: Settings

    def work(self, agent: str) -> str:
        return self.settings.subject(f"{SUBJECT_WORK}.{agent}")

    @property
    def work_all(self) -> str:
        return self.settings.subject(f"{SUBJECT_WORK}.>")

    @property
    def results(self) -> str:
        return self.settings.subject(SUBJECT_RESULTS)

    def control(self, mission_id: object) -> str:
        return self.settings.subject(f"{SUBJECT_CONTROL}.{mission_id}")

    @property
    def control_all(self) -> str:
        return self.settings.subject(f"{SUBJECT_CONTROL}.*")

    def timeline(self, mission_id: object) -> str:
        return self.settings.subject(f"{SUBJECT_TIMELINE}.{mission_id}")

    @property
    def timeline_all(self) -> str:
        return self.settings.subject(f"{SUBJECT_TIMELINE}.*")

    @property
    def sandbox_exec(self) -> str:
        return self.settings.subject(SUBJECT_SANDBOX_EXEC)

    @property
    def sandbox_cancel(self) -> str:
        return self.settings.subject(SUBJECT_SANDBOX_CANCEL)

    @property
    def work_stream(self) -> str:
        return self.settings.stream(WORK_STREAM)

    @property
    def events_stream(self) -> str:
        return self.settings.stream(EVENTS_STREAM)
