"""The catalogue: the programs, promotions, targets and customers the simulated org knows.

A catalogue is plain, immutable data loaded from YAML or JSON (``load_catalogue``) or built
from a mapping (``Catalogue.model_validate``). The simulator copies it into mutable runtime
state at start and on reset; the catalogue itself never changes. Format::

    auto_register_customers: true       # unknown customers are created on first sight
    sequences: {issual_id_start: 847, earned_id_start: 840, customer_id_start: 900000000}
    codes:                              # codes the docs do not give (all simulator-invented)
      target_not_enrolled: {code: 310120, message: "user not enrolled for the target"}
    programs:
      - program_id: 2714
        promotions:
          - {promotion_id: 202779, name: big-spender, type: ENROL_AND_ISSUE}
          - {promotion_id: 202780, promo_identifier: 95c77d88-..., type: DIRECT, active: true}
    targets:
      - {target_group_id: 12, target_id: 34, name: monthly-milestone, enrolment: all}
    customers:
      - {id: 423927867, mobile: "919986000586", email: a@b.in}
    holdings:                           # state the org already has when the simulator starts
      - {customer_id: 423927848, program_id: 2714, promotion: 1d9e540d-...,
         issual_id: "955", earned_ids: [957, 959]}
"""

from __future__ import annotations

import json
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class CatalogueError(ValueError):
    """A catalogue file or mapping that cannot be used; the message names the source."""


class PromotionKind(StrEnum):
    """What a promotion lets you do, whatever name the backend or the UI gives its type."""

    ENROL_AND_ISSUE = "ENROL_AND_ISSUE"
    DIRECT_ISSUE = "DIRECT_ISSUE"
    # "Available without issue": no bulk action applies to it; every one answers 8902.
    GENERIC = "GENERIC"

    @property
    def points_offer_type(self) -> str:
        """The backend ``pointsOfferType`` name."""
        return _POINTS_OFFER_TYPE[self]

    @property
    def loyalty_earning_type(self) -> str | None:
        """The backend ``loyaltyEarningType`` name (none for GENERIC)."""
        return _LOYALTY_EARNING_TYPE[self]


_POINTS_OFFER_TYPE = {
    PromotionKind.ENROL_AND_ISSUE: "LOYALTY_EARNING",
    PromotionKind.DIRECT_ISSUE: "LOYALTY",
    PromotionKind.GENERIC: "GENERIC",
}
_LOYALTY_EARNING_TYPE = {
    PromotionKind.ENROL_AND_ISSUE: "ISSUE_AND_EARN",
    PromotionKind.DIRECT_ISSUE: "DIRECT_EARN",
    PromotionKind.GENERIC: None,
}

# Every spelling the docs use: backend pointsOfferType / loyaltyEarningType names, UI names and
# the rules-file names of DESIGN.md.
TYPE_ALIASES: dict[str, PromotionKind] = {
    "ENROL_AND_ISSUE": PromotionKind.ENROL_AND_ISSUE,
    "LOYALTY_EARNING": PromotionKind.ENROL_AND_ISSUE,
    "ISSUE_AND_EARN": PromotionKind.ENROL_AND_ISSUE,
    "DIRECT_ISSUE": PromotionKind.DIRECT_ISSUE,
    "LOYALTY": PromotionKind.DIRECT_ISSUE,
    "DIRECT": PromotionKind.DIRECT_ISSUE,
    "DIRECT_EARN": PromotionKind.DIRECT_ISSUE,
    "GENERIC": PromotionKind.GENERIC,
}


class _Model(BaseModel):
    # YAML turns unquoted mobiles into ints; they are identifiers, so coerce them back.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Promotion(_Model):
    """One loyalty promotion of a program."""

    promotion_id: int
    promo_identifier: str | None = None
    name: str | None = None
    type: PromotionKind
    active: bool = True

    @field_validator("type", mode="before")
    @classmethod
    def _alias(cls, value: object) -> object:
        if isinstance(value, str):
            kind = TYPE_ALIASES.get(value.strip().upper())
            if kind is None:
                raise ValueError(
                    f"unknown promotion type {value!r}; use one of {sorted(TYPE_ALIASES)}"
                )
            return kind
        return value

    def matches(self, ref: int | str) -> bool:
        """Whether ``ref`` names this promotion (numeric id, promoIdentifier or name)."""
        if isinstance(ref, int):
            return ref == self.promotion_id
        return ref in (str(self.promotion_id), self.promo_identifier, self.name)


class Program(_Model):
    """A loyalty program and its promotions."""

    program_id: int
    name: str | None = None
    promotions: tuple[Promotion, ...] = ()


class Target(_Model):
    """A milestone/streak target that customers can be un-enrolled from.

    ``enrolment: all`` means every customer counts as enrolled until un-enrolled (milestones
    usually enrol the whole base); ``listed`` means only the ids in ``enrolled``.
    """

    target_group_id: int
    target_id: int
    name: str | None = None
    group_active: bool = True
    period_active: bool = True
    enrolment: Literal["all", "listed"] = "all"
    enrolled: tuple[int, ...] = ()


class Customer(_Model):
    """A customer of the org; at least the id, optionally mobile and email identifiers."""

    id: int = Field(gt=0)
    mobile: str | None = None
    email: str | None = None


class Holding(_Model):
    """Promotion state a customer already has when the simulator starts."""

    customer_id: int
    program_id: int
    promotion: int | str
    issual_id: str | None = None
    earned_ids: tuple[int, ...] = ()

    @field_validator("issual_id")
    @classmethod
    def _numeric_issual(cls, value: str | None) -> str | None:
        # revokedIssualId is documented as an integer, so issual ids must read as one.
        if value is not None and not value.isdigit():
            raise ValueError(f"issual_id must be numeric, got {value!r}")
        return value


class CodeSpec(_Model):
    """An error code and its message."""

    code: int
    message: str


class InventedCodes(_Model):
    """Answers for situations the docs give no code for. All are the simulator's choice."""

    # unEnroll for a customer who is not (or no longer) enrolled in the target. 310119 "already
    # enrolled" is the nearest documented code; 310120 continues that family. Invented.
    target_not_enrolled: CodeSpec = CodeSpec(
        code=310120, message="user not enrolled for the target"
    )
    # EARN on an enrol-and-issue promotion before ENROL: the docs say enrolment must come first
    # but give no code. Invented.
    earn_without_enrolment: CodeSpec = CodeSpec(
        code=8950, message="customer is not enrolled in the promotion"
    )
    # REVOKE_ENROL while earns are still active: the docs say earns must be revoked first but
    # give no code. Invented.
    revoke_enrol_with_active_earns: CodeSpec = CodeSpec(
        code=8951, message="earned promotions must be revoked before revoking the enrolment"
    )
    # REVOKE_ENROL with no active enrolment. The code is the documented "nothing (left) to
    # revoke" one; using it for enrolments is the simulator's reading.
    revoke_enrol_not_enrolled: CodeSpec = CodeSpec(
        code=8903, message="no active enrolment to revoke for the customer"
    )


class Sequences(_Model):
    """Where the id sequences start (they also skip past every id the catalogue holds)."""

    issual_id_start: int = Field(default=1000, gt=0)
    earned_id_start: int = Field(default=1000, gt=0)
    customer_id_start: int = Field(default=900_000_000, gt=0)


class Catalogue(_Model):
    """Everything the simulated org knows at start; immutable."""

    auto_register_customers: bool = False
    sequences: Sequences = Sequences()
    codes: InventedCodes = InventedCodes()
    programs: tuple[Program, ...] = ()
    targets: tuple[Target, ...] = ()
    customers: tuple[Customer, ...] = ()
    holdings: tuple[Holding, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        _unique("program_id", [p.program_id for p in self.programs])
        for program in self.programs:
            _unique(
                f"promotion_id in program {program.program_id}",
                [p.promotion_id for p in program.promotions],
            )
        _unique(
            "promo_identifier",
            [p.promo_identifier for p in self.promotions() if p.promo_identifier is not None],
        )
        _unique("target", [(t.target_group_id, t.target_id) for t in self.targets])
        _unique("customer id", [c.id for c in self.customers])
        _unique("customer mobile", [c.mobile for c in self.customers if c.mobile])
        _unique("customer email", [c.email.lower() for c in self.customers if c.email])
        known_customers = {c.id for c in self.customers}
        for holding in self.holdings:
            if holding.customer_id not in known_customers:
                raise ValueError(f"holding names unknown customer {holding.customer_id}")
            promotion = self.find_promotion(holding.program_id, holding.promotion)
            if promotion is None:
                raise ValueError(
                    f"holding names unknown promotion {holding.promotion!r} "
                    f"in program {holding.program_id}"
                )
            if (
                promotion.type is PromotionKind.ENROL_AND_ISSUE
                and holding.earned_ids
                and holding.issual_id is None
            ):
                raise ValueError(
                    f"holding of customer {holding.customer_id} has earns on an enrol-and-"
                    "issue promotion without an issual_id"
                )
        return self

    def promotions(self) -> list[Promotion]:
        """Every promotion of every program."""
        return [p for program in self.programs for p in program.promotions]

    def find_program(self, program_id: int) -> Program | None:
        """The program with this id, if any."""
        return next((p for p in self.programs if p.program_id == program_id), None)

    def find_promotion(self, program_id: int, ref: int | str) -> Promotion | None:
        """A promotion of a program by numeric id, promoIdentifier or name."""
        program = self.find_program(program_id)
        if program is None:
            return None
        return next((p for p in program.promotions if p.matches(ref)), None)

    def with_changes(self, **changes: Any) -> Catalogue:
        """A validated copy with some top-level fields replaced (tests, CLI overrides)."""
        return Catalogue.model_validate({**self.model_dump(), **changes})


def _unique(what: str, values: list[Any]) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what}: {value!r}")
        seen.add(value)


def parse_catalogue(data: object, source: str = "<catalogue>") -> Catalogue:
    """Validate a mapping as a catalogue; errors name ``source``."""
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        raise CatalogueError(f"{source}: invalid catalogue: {exc}") from exc


def load_catalogue(path: str | Path) -> Catalogue:
    """Load a catalogue from a YAML (``.yaml``/``.yml``) or JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read catalogue: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: not valid {path.suffix or 'YAML'}: {exc}") from exc
    return parse_catalogue(data, str(path))


def default_catalogue() -> Catalogue:
    """The catalogue shipped with the package (``catalogue.yaml``: the doc examples' ids)."""
    text = (
        resources.files("promo_bridge.simulator")
        .joinpath("catalogue.yaml")
        .read_text(encoding="utf-8")
    )
    return parse_catalogue(yaml.safe_load(text), "promo_bridge/simulator/catalogue.yaml")
