"""Print a /metrics exposition in which every series of the service has at least one sample.

`promtool check metrics` lints names, types, units and help texts, but only of series that have
samples, and a labelled series has none until it is used. A live scrape needs Kafka and the API,
so this builds the service's own Metrics object, uses each series once with label values like
the ones the service sets, and prints what /metrics would serve:

    .venv/bin/python scripts/scrape_metrics.py | promtool check metrics

It exits 1, naming the series, when one stays without samples: a series added to metrics.py must
be exercised here too, or it would escape the lint.
"""

from __future__ import annotations

import sys

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from promo_bridge.domain.commands import Action, Endpoint
from promo_bridge.domain.outcomes import ErrorClass, OutcomeStatus
from promo_bridge.observability.metrics import Metrics

# Label values for each labelled series, as the service sets them (see pipeline.py, the consumer
# loop and runtime_client.py). Keyed by the attribute name on Metrics.
TOPICS = ("orders", "returns", "reviews")
EVENT_TYPES = ("order.placed", "return.created", "review.submitted")
ENDPOINTS = tuple(endpoint.value for endpoint in Endpoint)

LABELS: dict[str, list[tuple[str, ...]]] = {
    "events_consumed": list(zip(TOPICS, EVENT_TYPES, strict=True)),
    "events_unread": [("reviews", "cart.abandoned")],
    "decode_failures": [("reviews",)],
    "dlq_records": [("reviews",)],
    "dlq_refused": [("reviews",)],
    "rule_errors": [("enrol-big-spenders",)],
    "rule_actions_skipped": [("coupon-for-review", "no_identifier")],
    "commands": [(action.value, "big-spender") for action in Action],
    "batch_size": [(endpoint,) for endpoint in ENDPOINTS],
    "batch_flushes": [
        ("enrolAndEarn", "size"),
        ("enrolAndEarn", "window"),
        ("revokeEnrolAndEarn", "flush"),
    ],
    "api_latency": [
        ("enrolAndEarn", "200"),
        ("enrolAndEarn", "429"),
        ("revokeEnrolAndEarn", "503"),
        ("unEnroll", "error"),
    ],
    "api_retries": [
        ("enrolAndEarn", "throttled"),
        ("revokeEnrolAndEarn", "server_error"),
        ("unEnroll", "timeout"),
    ],
    "api_throttle_wait": [(endpoint,) for endpoint in ENDPOINTS],
    "api_budget": [(endpoint,) for endpoint in (*ENDPOINTS, "promotionData")],
    "outcomes": [
        (OutcomeStatus.APPLIED.value, ""),
        (OutcomeStatus.ALREADY_APPLIED.value, ErrorClass.ALREADY_APPLIED.value),
        (OutcomeStatus.REJECTED.value, ErrorClass.REJECTED.value),
        (OutcomeStatus.REJECTED.value, ErrorClass.CONFIG.value),
        (OutcomeStatus.FAILED.value, ""),
        (OutcomeStatus.FAILED.value, ErrorClass.UNVERIFIED.value),
        (OutcomeStatus.FAILED.value, ErrorClass.RETRY_EXHAUSTED.value),
        (OutcomeStatus.SKIPPED.value, ""),
    ],
    "commands_verified": [("applied",), ("undecided",)],
    "commands_skipped": [("order_returned",), ("nothing_earned",), ("order_unknown",)],
    "batches_unavailable": [("enrolAndEarn",)],
    "partition_pauses": [("backpressure",), ("auth",)],
    "consumer_lag": [(topic, str(partition)) for topic in TOPICS for partition in (0, 1)],
}


def _use(metric: MetricWrapperBase) -> None:
    if isinstance(metric, Counter):
        metric.inc(3)
    elif isinstance(metric, Histogram):
        for value in (0.004, 0.3, 7.0):
            metric.observe(value)
    elif isinstance(metric, Gauge):
        metric.set(2)
    else:
        raise TypeError(f"unexpected metric type {type(metric).__name__}")


def exercised_metrics() -> Metrics:
    """A Metrics object with every series used at least once."""
    metrics = Metrics()
    for name, metric in vars(metrics).items():
        if not isinstance(metric, MetricWrapperBase):
            continue
        if name == "seconds_since_last_commit":
            continue  # a callback gauge: it always has its one sample
        # prometheus_client has no public getter for a parent's label names.
        labelnames = metric._labelnames
        if not labelnames:
            _use(metric)
            continue
        for values in LABELS.get(name, []):
            _use(metric.labels(*values))
    metrics.committed()
    return metrics


def unused_series(metrics: Metrics) -> list[str]:
    """Families of the registry that have no sample."""
    return [family.name for family in metrics.registry.collect() if not family.samples]


def main() -> int:
    """Print the exposition; exit 1 if a series has no sample."""
    metrics = exercised_metrics()
    missing = unused_series(metrics)
    if missing:
        print(
            "scrape_metrics.py: no sample for "
            + ", ".join(missing)
            + "; add label values for them to LABELS",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(metrics.render().decode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
