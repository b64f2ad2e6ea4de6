"""Request rates and latency percentiles from two polls of the Prometheus text."""

from __future__ import annotations

import math

import pytest

from tui.metrics import Sample, TrafficMeter, parse, parse_text

LABELS = 'app_name="appliance",method="{method}",path="{path}",status_code="{status}"'


def exposition(recommendations: dict[str, float], health: int) -> str:
    """Litestar's middleware output for POST /recommendations and GET /health."""
    recs = LABELS.format(method="POST", path="/recommendations", status="200")
    ping = LABELS.format(method="GET", path="/health", status="200")
    lines = [
        "# HELP appliance_requests_total Total requests",
        "# TYPE appliance_requests_total counter",
        f"appliance_requests_total{{{recs}}} {recommendations['+Inf']}",
        f"appliance_requests_total{{{ping}}} {health}.0",
        f"appliance_requests_created{{{recs}}} 1.7e+09",
        "# TYPE appliance_request_duration_seconds histogram",
    ]
    for le, count in recommendations.items():
        lines.append(f'appliance_request_duration_seconds_bucket{{{recs},le="{le}"}} {count}')
    lines += [
        f'appliance_request_duration_seconds_bucket{{{ping},le="0.001"}} {health}.0',
        f'appliance_request_duration_seconds_bucket{{{ping},le="+Inf"}} {health}.0',
        "# TYPE appliance_items gauge",
        "appliance_items 36.0",
        'appliance_reranker_info{kind="none"} 1.0',
    ]
    return "\n".join(lines) + "\n"


BEFORE = exposition({"0.01": 2, "0.02": 8, "0.05": 10, "+Inf": 10}, health=100)
AFTER = exposition({"0.01": 12, "0.02": 26, "0.05": 30, "+Inf": 30}, health=104)


def test_the_small_parser_reads_samples_labels_and_infinities() -> None:
    samples = parse_text(BEFORE)
    assert samples[0] == Sample(
        "appliance_requests_total",
        {
            "app_name": "appliance",
            "method": "POST",
            "path": "/recommendations",
            "status_code": "200",
        },
        10.0,
    )
    assert Sample("appliance_items", {}, 36.0) in samples
    escaped = parse_text('m{path="/a\\"b\\\\c"} +Inf 1700000000\n')
    assert escaped == [Sample("m", {"path": '/a"b\\c'}, math.inf)]
    with pytest.raises(ValueError, match="line 1"):
        parse_text("not a sample line\n")


def test_the_small_parser_agrees_with_prometheus_client() -> None:
    pytest.importorskip("prometheus_client")
    wanted = {(s.name, tuple(sorted(s.labels.items())), s.value) for s in parse(AFTER)}
    ours = {(s.name, tuple(sorted(s.labels.items())), s.value) for s in parse_text(AFTER)}
    assert ours == wanted


def test_rates_and_percentiles_come_from_the_difference_between_polls() -> None:
    meter = TrafficMeter()
    assert meter.update(parse_text(BEFORE), now=100.0) is None
    traffic = meter.update(parse_text(AFTER), now=102.0)
    assert traffic is not None
    # 20 recommendations in 2 s; the 4 health checks are the dashboard's own polling.
    assert traffic.requests_per_second == pytest.approx(10.0)
    # Of the 20: 10 took up to 10 ms, 8 more up to 20 ms, 2 more up to 50 ms.
    assert traffic.p50_ms == pytest.approx(10.0)
    assert traffic.p95_ms == pytest.approx(35.0)
    by_route = {(r.method, r.path): r for r in traffic.routes}
    assert by_route["POST", "/recommendations"].total == 30
    assert by_route["POST", "/recommendations"].per_second == pytest.approx(10.0)
    assert by_route["GET", "/health"].per_second == pytest.approx(2.0)
    assert (traffic.routes[0].method, traffic.routes[0].path) == ("GET", "/health")  # busiest


def test_no_requests_means_no_percentiles_and_a_restart_counts_from_zero() -> None:
    meter = TrafficMeter()
    meter.update(parse_text(AFTER), now=0.0)
    idle = meter.update(parse_text(AFTER), now=2.0)
    assert idle is not None
    assert idle.requests_per_second == 0
    assert idle.p50_ms is None
    restarted = meter.update(parse_text(BEFORE), now=4.0)
    assert restarted is not None
    assert restarted.requests_per_second == pytest.approx(5.0)
