"""How big each workload is: the full profile and the ``--quick`` one."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Profile:
    name: str
    b1_missions: int  # B1: 1-step missions, closed batch
    b2_chains: int  # B2: 3-step chains
    b3_fanouts: int  # B3: 100-step fan-outs
    b4_duration_s: float  # B4: open-loop arrivals for this long
    b4_max_missions: int  # ... and never more than this many
    b5_missions: int  # B5: COO's B1 at each log level
    b6_missions: int  # B6: the statement-logging run (1-step missions)
    b7_duration_s: float  # B7: per target
    b7_connections: int
    batch_deadline_s: float  # every batch workload gives up after this long
    latency_drain_s: float  # B4 waits this long after the last arrival for stragglers
    total_budget_s: float  # the whole run; workloads that would start past it are skipped
    peer_reserve_s: float  # expected time of one peer: kept back from COO's share of the budget
    peer_timeout_s: float  # one peer's driver process, all its workloads, at most
    scale_missions: int  # the scale workload: 1-step missions per shape (workers x orchestrators)
    scale_budget_s: float  # added to the run's budget when the scale workload runs
    scale_in_profile: bool  # the profile runs it (otherwise only `--scale` does)
    b6_background_s: float = 3.0  # B6: idle window measured first (the engine's housekeeping)
    warmup_missions: int = 20  # COO and each peer run this many 1-step items first, unmeasured
    submit_concurrency: int = 16
    # the scale workload's shapes: (worker processes, orchestrator processes), one sandbox each time
    scale_shapes: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (4, 2))


FULL = Profile(
    name="full",
    b1_missions=5000,
    b2_chains=500,
    b3_fanouts=10,
    b4_duration_s=30.0,
    b4_max_missions=3000,
    b5_missions=1000,
    b6_missions=100,
    b7_duration_s=10.0,
    b7_connections=32,
    batch_deadline_s=330.0,
    latency_drain_s=30.0,
    total_budget_s=1140.0,
    peer_reserve_s=160.0,
    peer_timeout_s=420.0,
    scale_missions=600,
    scale_budget_s=360.0,
    scale_in_profile=True,
)

QUICK = Profile(
    name="quick",
    b1_missions=200,
    b2_chains=40,
    b3_fanouts=2,
    b4_duration_s=4.0,
    b4_max_missions=300,
    b5_missions=300,  # fewer, and start-up (first exports, first connections) weighs on the ratio
    b6_missions=100,  # as the full profile: per-step figures need more steps than the idle background
    b7_duration_s=2.0,
    b7_connections=16,
    batch_deadline_s=25.0,
    latency_drain_s=8.0,
    total_budget_s=165.0,
    peer_reserve_s=25.0,
    peer_timeout_s=60.0,
    scale_missions=100,
    scale_budget_s=240.0,
    scale_in_profile=False,
    b6_background_s=2.0,
    warmup_missions=10,
)

# The test suite's smoke run (``--smoke``): every workload and peer, as small as still exercises
# them. It checks that the harness works; its figures mean nothing.
SMOKE = replace(
    QUICK,
    name="smoke",
    b1_missions=60,
    b2_chains=10,
    b3_fanouts=1,
    b4_duration_s=2.0,
    b4_max_missions=100,
    b5_missions=60,
    b6_missions=20,
    b7_duration_s=1.0,
    latency_drain_s=6.0,
    total_budget_s=130.0,
    peer_reserve_s=20.0,
    warmup_missions=5,
)

PROFILES = {profile.name: profile for profile in (FULL, QUICK, SMOKE)}
