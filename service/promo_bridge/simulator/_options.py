"""API behaviour the documentation leaves open, as knobs with the simulator's defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """How the simulated API answers where the docs are silent."""

    # Customers per call on enrolAndEarn and revokeEnrolAndEarn (documented: 100).
    bulk_limit: int = 100
    # Customers per revokeDirectEarn call: 10 when the org enables bulk redirection (the
    # documented default); None models redirection disabled (no limit).
    revoke_direct_earn_limit: int | None = 10
    # Path prefix of the target endpoints; the unprefixed path is always served too.
    target_path_prefix: str = "/v3.1"
    # HTTP status of a bulk response with some failed entries, and with all entries failed
    # (including request-level errors). The docs do not say; 200 unless configured.
    partial_failure_status: int = 200
    failure_status: int = 200
    # HTTP status of a malformed bulk body (not JSON, not an object): body code 8881.
    malformed_body_status: int = 400
    # HTTP status of an unEnroll error. The docs do not say; v3 APIs answer 4xx for errors.
    target_error_status: int = 400
    # Retention of the call log and of ledger entries (counts stay exact regardless).
    max_call_records: int = 100_000
    max_ledger_entries: int = 1_000_000

    def __post_init__(self) -> None:
        if self.bulk_limit < 1:
            raise ValueError("bulk_limit must be at least 1")
        if self.revoke_direct_earn_limit is not None and self.revoke_direct_earn_limit < 1:
            raise ValueError("revoke_direct_earn_limit must be at least 1 (or None: unlimited)")
        prefix = self.target_path_prefix
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"target_path_prefix must look like '/v3.1', got {prefix!r}")
        for name in (
            "partial_failure_status",
            "failure_status",
            "malformed_body_status",
            "target_error_status",
        ):
            if not 200 <= getattr(self, name) <= 599:
                raise ValueError(f"{name} must be an HTTP status")
