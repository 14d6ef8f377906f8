"""Error codes and messages the simulator answers with.

Documented codes carry the exact message text of the endpoint pages (where two pages spell a
message differently, the enrolAndEarn page wins). Codes the documentation does not give for a
situation the simulator must still answer are *invented*; they live in the catalogue's ``codes``
section (see ``_catalogue.InventedCodes``) so a fixture can change them, and are listed in the
package docstring.
"""

from __future__ import annotations

from typing import Final

# Bulk endpoints (enrolAndEarn, revokeEnrolAndEarn, revokeDirectEarn).
INVALID_PROGRAM: Final = 1101
CUSTOMER_NOT_FOUND: Final = 8015
INVALID_PROMOTION: Final = 8874
INSUFFICIENT_PARAMETERS: Final = 8881
PROMOTION_INACTIVE: Final = 8892
ISSUE_FAILED: Final = 8896
USER_GROUP: Final = 8899
INVALID_ENTITY_TYPE: Final = 8901
ACTION_NOT_SUPPORTED: Final = 8902
EARN_IDS_INVALID: Final = 8903
NO_ACTIVE_ISSUED_PROMOTION: Final = 2305
IDENTIFIERS_EMPTY: Final = 11013
# Not on the endpoint pages: the older v2 docs list 1060 "batch limit exceeded" among their
# status codes. Using it for an oversized batch is the simulator's reading, not documented.
BATCH_LIMIT_EXCEEDED: Final = 1060

# Target (milestone/streak) endpoints.
TARGET_INVALID_INPUT: Final = 300004
TARGET_INVALID_USER: Final = 310011
TARGET_GROUP_NOT_FOUND: Final = 310017
TARGET_RULE_NOT_FOUND: Final = 310018
TARGET_PERIOD_NOT_FOUND: Final = 310019

# Authentication.
OAUTH_INVALID_CLIENT: Final = 320001
TOKEN_EXPIRED: Final = 498
UNAUTHORIZED: Final = 401
ACCESS_DENIED: Final = 4000
AUTHORIZATION_UNAVAILABLE: Final = 4001

MESSAGES: Final[dict[int, str]] = {
    INVALID_PROGRAM: "invalid programId passed",
    CUSTOMER_NOT_FOUND: "Customer not found for the given identifiers",
    INVALID_PROMOTION: "promotion id passed is invalid",
    INSUFFICIENT_PARAMETERS: (
        "insufficient parameters passed, program id and one of promotion id/identifier are required"
    ),
    PROMOTION_INACTIVE: "promotion is inactive",
    ISSUE_FAILED: "Error occurred while issuing promotion to the customer",
    USER_GROUP: "Cannot enrol/issue to the user group",
    INVALID_ENTITY_TYPE: "invalid entity type passed",
    ACTION_NOT_SUPPORTED: "bulk action passed not supported for loyalty/generic promotion type",
    EARN_IDS_INVALID: "Earn IDs passed are either invalid or already revoked",
    NO_ACTIVE_ISSUED_PROMOTION: "Active issued promotion is not available for the customer.",
    IDENTIFIERS_EMPTY: "identifierName, identifierValue, source can not be empty",
    BATCH_LIMIT_EXCEEDED: "batch limit exceeded",
    TARGET_INVALID_INPUT: "Invalid input",
    TARGET_INVALID_USER: "Invalid userId",
    TARGET_GROUP_NOT_FOUND: "Target group not found or deactivated",
    TARGET_RULE_NOT_FOUND: "Target rule not found",
    TARGET_PERIOD_NOT_FOUND: "Target period not found",
    OAUTH_INVALID_CLIENT: "Invalid client key and secret",
    UNAUTHORIZED: "Unauthorized",
    ACCESS_DENIED: "Not authorized. Access is denied!",
    AUTHORIZATION_UNAVAILABLE: "Authorization status unavailable!",
}

# The revoke pages word 8902 differently from enrolAndEarn; both are reproduced verbatim.
REVOKE_ACTION_NOT_SUPPORTED_MESSAGE: Final = (
    "revoke bulk action passed not supported for loyalty/generic promotion type"
)


def message(code: int) -> str:
    """The documented message for a code (falls back to a generic one for unknown codes)."""
    return MESSAGES.get(code, f"error {code}")
