"""What the operator keeps in memory: writes not yet seen in its indexes, and metric series."""

from __future__ import annotations

from prometheus_client import generate_latest

from modelplane.api.llmdeployment import LLMDeploymentSpec, Phase
from modelplane.operator.metrics import OperatorMetrics, sample_of
from modelplane.operator.reconcile.expectations import Expectations
from modelplane.operator.reconcile.observed import ObservedChild

OWNER = ("llm", "chat")
SVC = ("Service", "chat")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_write_overlays_the_index_until_the_index_shows_it() -> None:
    clock = Clock()
    expect = Expectations(ttl_seconds=30, clock=clock)
    old, new = ObservedChild("Service", "chat", "h1"), ObservedChild("Service", "chat", "h2")
    expect.expect_child(OWNER, SVC, new)
    assert expect.children(OWNER, {SVC: old}) == {SVC: new}  # the index lags
    assert expect.children(OWNER, {SVC: new}) == {SVC: new}  # caught up: dropped
    assert expect.children(OWNER, {SVC: old}) == {SVC: old}  # the index is the truth again


def test_an_unconfirmed_write_expires() -> None:
    clock = Clock()
    expect = Expectations(ttl_seconds=30, clock=clock)
    expect.expect_child(OWNER, SVC, None)  # deleted
    present = ObservedChild("Service", "chat", "h1")
    assert expect.children(OWNER, {SVC: present}) == {}
    clock.now = 31
    assert expect.children(OWNER, {SVC: present}) == {SVC: present}


def test_status_expectation() -> None:
    expect = Expectations(clock=Clock())
    expect.expect_status(OWNER, {"phase": "Ready", "replicas": None})
    assert expect.status(OWNER, {"phase": "Loading", "replicas": 1}) == {"phase": "Ready"}
    assert expect.status(OWNER, {"phase": "Ready"}) == {"phase": "Ready"}  # confirmed
    assert expect.status(OWNER, {"phase": "Loading"}) == {"phase": "Loading"}


def _scrape(metrics: OperatorMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_metric_series_follow_the_resource() -> None:
    metrics = OperatorMetrics()
    spec = LLMDeploymentSpec.model_validate(
        {"model": {"source": "hf://o/m"}, "autoscaling": {"enabled": True, "maxReplicas": 6,
                                                           "targets": {"ttftP95Seconds": 2}}}
    )  # fmt: skip
    metrics.record(sample_of("llm", "chat", "m1", Phase.READY, spec, desired=2, ready=2, updated=2))
    text = _scrape(metrics)
    labels = 'llmdeployment="chat",model="m1",namespace="llm"'
    assert f"modelplane_llmdeployment_max_replicas{{{labels}}} 6.0" in text
    assert f"modelplane_llmdeployment_target_ttft_p95_seconds{{{labels}}} 2.0" in text
    assert f'modelplane_llmdeployment_phase{{{labels},phase="Ready"}} 1.0' in text
    assert f'modelplane_llmdeployment_phase{{{labels},phase="Failed"}} 0.0' in text
    assert 'modelplane_operator_llmdeployments{phase="Ready"} 1.0' in text
    # Renamed model: the old series go, the new ones come.
    metrics.record(sample_of("llm", "chat", "m2", Phase.LOADING, spec, desired=2, ready=0))
    text = _scrape(metrics)
    assert 'model="m1"' not in text and 'model="m2"' in text
    assert 'modelplane_operator_llmdeployments{phase="Ready"} 0.0' in text
    metrics.forget("llm", "chat")
    samples = [line for line in _scrape(metrics).splitlines() if not line.startswith("#")]
    assert not [line for line in samples if line.startswith("modelplane_llmdeployment_")]
    text = "\n".join(samples)
    assert 'modelplane_operator_llmdeployments{phase="Loading"} 0.0' in text


def test_operator_metric_names_the_dashboards_use_exist() -> None:
    metrics = OperatorMetrics()
    metrics.scaling_decisions.labels("llm", "chat", "up").inc()
    metrics.reconcile_duration.observe(0.01)
    text = _scrape(metrics)
    for name in (
        'modelplane_operator_reconcile_total{result="ok"}',
        'modelplane_operator_reconcile_total{result="invalid"}',
        "modelplane_operator_reconcile_duration_seconds_bucket",
        'modelplane_operator_scaling_decisions_total{direction="up",llmdeployment="chat",'
        'namespace="llm"} 1.0',
        "process_resident_memory_bytes",
    ):
        assert name in text, name


def test_scaling_decisions_count_from_zero_before_the_first_one() -> None:
    """A counter that first appears at 1 shows no increase(): the first decision would hide."""
    metrics = OperatorMetrics()
    metrics.count_scaling_of("llm", "chat")
    text = _scrape(metrics)
    for direction in ("up", "down"):
        assert (
            f'modelplane_operator_scaling_decisions_total{{direction="{direction}",'
            'llmdeployment="chat",namespace="llm"} 0.0'
        ) in text
