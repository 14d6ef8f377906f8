"""The service's Prometheus series, on a registry of its own per service instance.

A registry per instance (not the global one) lets tests run two services in one process and
read each one's numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

NAMESPACE = "promo_bridge"

_BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 75, 100)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every series the service exports; names follow Prometheus conventions."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "events_consumed_total",
            "Input events read, by topic and CloudEvents type.",
            ["topic", "type"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.events_unread = Counter(
            "events_unread_total",
            "Input events of a type no rule reads, by topic and type (to the DLQ as well when"
            " PROMO_BRIDGE_DEAD_LETTER_UNREAD_EVENTS is true).",
            ["topic", "type"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.decode_failures = Counter(
            "decode_failures_total",
            "Input events sent to the DLQ because they did not decode.",
            ["topic"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.dlq_records = Counter(
            "dlq_records_total",
            "Records published to the DLQ topic.",
            ["topic"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.dlq_refused = Counter(
            "dlq_refused_total",
            "Undecodable input records whose DLQ record the broker refused for good (too large);"
            " their offsets moved on, and a log line says where they are.",
            ["topic"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.rule_errors = Counter(
            "rule_evaluation_errors_total",
            "CEL conditions that failed to evaluate (no match).",
            ["rule"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.rule_actions_skipped = Counter(
            "rule_actions_skipped_total",
            "Actions of matched rules that made no command (e.g. the customer has no usable id).",
            ["rule", "reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.commands = Counter(
            "commands_total",
            "Commands produced by the rules.",
            ["action", "promotion"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.commands_deduplicated = Counter(
            "commands_deduplicated_total",
            "Commands dropped because the same command_id was already pending.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.batch_size = Histogram(
            "batch_size",
            "Customers per API call.",
            ["endpoint"],
            buckets=_BATCH_SIZE_BUCKETS,
            namespace=NAMESPACE,
            registry=r,
        )
        self.batch_flushes = Counter(
            "batch_flushes_total",
            "Batches that left the batcher, by reason (size, window, flush).",
            ["endpoint", "reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.api_latency = Histogram(
            "api_request_duration_seconds",
            "Capillary HTTP calls, by endpoint and status.",
            ["endpoint", "status"],
            buckets=_LATENCY_BUCKETS,
            namespace=NAMESPACE,
            registry=r,
        )
        self.api_retries = Counter(
            "api_retries_total",
            "Capillary calls retried, by endpoint and reason.",
            ["endpoint", "reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.api_throttle_wait = Counter(
            "api_throttle_wait_seconds_total",
            "Seconds calls waited for the client-side calls-per-minute budget.",
            ["endpoint"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.token_refreshes = Counter(
            "oauth_token_refreshes_total",
            "OAuth tokens generated.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.outcomes = Counter(
            "outcomes_total",
            "Outcome records published, by status and error class.",
            ["status", "error_class"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.batches_unavailable = Counter(
            "batches_unavailable_total",
            "Batches kept pending because the API stayed unavailable past the retry bound.",
            ["endpoint"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.api_budget = Gauge(
            "api_budget_calls_per_minute",
            "This replica's calls per minute per endpoint: the org's budget times its share of"
            " the input partitions (or the whole budget with PROMO_BRIDGE_CAPILLARY_BUDGET_SPLIT"
            "=none).",
            ["endpoint"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.pending_commands = Gauge(
            "pending_commands",
            "Commands accepted and not yet published as outcomes.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.paused_partitions = Gauge(
            "paused_partitions",
            "Assigned partitions paused for backpressure or authentication.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.partition_pauses = Counter(
            "partition_pauses_total",
            "Times consumption of the assigned partitions was paused, by reason"
            " (backpressure: pending commands above the bound; auth: credentials refused).",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.auth_paused = Gauge(
            "auth_paused",
            "1 while consumption is paused because Capillary refuses the credentials.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records between the committed offset and the end of the partition.",
            ["topic", "partition"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.commits = Counter(
            "offset_commits_total",
            "Offset commits sent to the group coordinator.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.seconds_without_progress = Gauge(
            "seconds_without_progress",
            "Seconds that work has been pending with nothing completed (0 when idle); /readyz"
            " fails past PROMO_BRIDGE_STALL_TIMEOUT_S.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.completed_uncommitted = Gauge(
            "completed_uncommitted_outcomes",
            "Outcomes published for events above the committed offsets: work a crash would"
            " make the next owner read back from the outcomes topic instead of redoing.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.partitions_assigned = Counter(
            "partitions_assigned_total",
            "Input partitions assigned to this instance, counted at every rebalance: a steady"
            " rise means the group keeps rebalancing.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.restored_commands = Counter(
            "restored_commands_total",
            "Commands found completed in the outcomes topic when a partition was assigned.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.restore_failures = Counter(
            "restore_failures_total",
            "Partitions assigned whose completed work could not be read back (duplicates"
            " possible).",
            namespace=NAMESPACE,
            registry=r,
        )
        self.pending_bytes = Gauge(
            "pending_dead_letter_bytes",
            "Bytes of undecodable records held until their DLQ record is acknowledged; the"
            " partitions pause at PROMO_BRIDGE_MAX_PENDING_BYTES.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.commands_skipped = Counter(
            "commands_skipped_total",
            "Commands the order ledger settled without a call, by reason: order_returned (an"
            " earn for a returned order), nothing_earned, order_unknown (a return's revoke).",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.unknown_order_returns = Counter(
            "returns_unknown_order_total",
            "Returns whose order the ledger did not know (older than the retention, or before"
            " the service ran); handled as PROMO_BRIDGE_UNKNOWN_ORDER_RETURN says.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.ledger_holdings = Gauge(
            "ledger_holdings",
            "Customer promotion holdings kept in the ledger (state topic) of owned partitions.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.commands_verified = Counter(
            "commands_verified_total",
            "Unsure commands (a call's answer was lost) settled by the customer lookup, by"
            " finding: applied (not sent again), undecided (failed, unverified); the ones found"
            " not applied are sent and counted in commands_total as usual.",
            ["finding"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.producer_replacements = Counter(
            "kafka_producer_replacements_total",
            "Kafka producers replaced after failing in a way they cannot recover from"
            " (e.g. OutOfOrderSequenceNumber after a broker outage).",
            namespace=NAMESPACE,
            registry=r,
        )
        self._last_commit_monotonic = time.monotonic()
        self.seconds_since_last_commit = Gauge(
            "seconds_since_last_commit",
            "Seconds since offsets were last committed.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.seconds_since_last_commit.set_function(self._since_commit)

    def committed(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Record a successful commit."""
        self.commits.inc()
        self._last_commit_monotonic = clock()

    def up_to_date(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Nothing is pending and nothing is left to commit: not a stuck commit."""
        self._last_commit_monotonic = clock()

    def _since_commit(self) -> float:
        return time.monotonic() - self._last_commit_monotonic

    def render(self) -> bytes:
        """The text exposition of every series."""
        return generate_latest(self.registry)
