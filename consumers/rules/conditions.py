"""The condition language of ``alert_rules.conditions`` and its evaluation (pure; docs/alert-rules.md).

One pydantic model per rule type validates a rule's ``conditions``; ``evaluate`` compares
a snapshot with its predecessor (by ``scraped_at``) under one valid rule. Every
condition is a *change* between two snapshots: a rule never fires on a product's first
snapshot, and a threshold (``below``, ``rank_worse_than``...) fires when it is crossed,
not on every snapshot beyond it.

Both the engine (``consumers.rules.sink``) and ``insights rules add|test`` use this
module, so a rule the CLI accepts is exactly a rule the engine evaluates.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigError

RULE_TYPES = ("price_change", "rating_change", "rank_change", "stock_change")
TARGET_TYPES = ("product", "group")
SEVERITIES = ("low", "medium", "high", "critical")

#: availability_status values (lower case, as stored) that mean "cannot be bought"
OUT_OF_STOCK = frozenset({"out_of_stock", "unavailable"})

#: uuid5 namespace of the engine's event ids (fixed forever: ids must not change across releases)
EVENT_NAMESPACE = uuid.UUID("8f6b8a3e-3c1e-5b7e-9a55-2d7c4b9e1a13")

Positive = Annotated[Decimal, Field(gt=0)]
NonNegative = Annotated[Decimal, Field(ge=0)]


class RuleError(ConfigError):
    """A rule that does not validate; the message names the field."""


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: no second firing of this rule for the same product within this period (by scraped_at);
    #: ISO 8601 (``PT6H``) or seconds
    cooldown: timedelta | None = None
    #: the rule applies only to snapshots whose price (or, without one, the previous price) is at least this
    min_price: NonNegative | None = None

    def _one_of(self, *names: str) -> None:
        given = [n for n in names if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of {', '.join(names)} is required (got {', '.join(given) or 'none'})")


class PriceChange(_Common):
    direction: Literal["down", "up", "any"] = "any"
    #: relative change of price, in percent of the previous price
    percent: Positive | None = None
    #: absolute change of price
    amount: Positive | None = None
    #: the price crosses below this (previous >= below > new)
    below: NonNegative | None = None
    #: the price crosses above this (previous <= above < new)
    above: NonNegative | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PriceChange:
        self._one_of("percent", "amount", "below", "above")
        return self


class RatingChange(_Common):
    direction: Literal["down", "up", "any"] = "any"
    #: change of the rating, in stars
    amount: Annotated[Decimal, Field(gt=0, le=5)] | None = None
    below: Annotated[Decimal, Field(ge=0, le=5)] | None = None
    above: Annotated[Decimal, Field(ge=0, le=5)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RatingChange:
        self._one_of("amount", "below", "above")
        return self


class RankChange(_Common):
    #: the best-sellers-rank category (a key of bsr_data)
    category: Annotated[str, Field(min_length=1)]
    #: the rank becomes worse (a larger number) than this
    rank_worse_than: Annotated[int, Field(ge=1)] | None = None
    #: the rank becomes better (a smaller number) than this
    rank_better_than: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RankChange:
        self._one_of("rank_worse_than", "rank_better_than")
        return self


class StockChange(_Common):
    #: out_of_stock: becomes unbuyable; in_stock: becomes buyable again; any: either
    to: Literal["out_of_stock", "in_stock", "any"]


CONDITIONS: dict[str, type[_Common]] = {
    "price_change": PriceChange,
    "rating_change": RatingChange,
    "rank_change": RankChange,
    "stock_change": StockChange,
}

ALERT_TYPE = {t: t.upper() for t in RULE_TYPES}  # the Avro AlertType symbol


class RuleFields(BaseModel):
    """A whole rule as ``insights rules add`` takes it (the row's columns that have meaning)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    rule_type: Literal["price_change", "rating_change", "rank_change", "stock_change"]
    target_type: Literal["product", "group"]
    target_id: Annotated[str, Field(min_length=1, max_length=20)]
    conditions: dict[str, Any]
    severity: Literal["low", "medium", "high", "critical"] = "medium"

    @model_validator(mode="after")
    def _target(self) -> RuleFields:
        if self.target_type == "product" and not _is_asin(self.target_id):
            raise ValueError("target_id: a product target is an ASIN (10 upper-case letters or digits)")
        if self.target_type == "group" and not self.target_id.isdigit():
            raise ValueError("target_id: a group target is a competitive group id (digits)")
        return self


def _is_asin(text: str) -> bool:
    return len(text) == 10 and all(c.isdigit() or ("A" <= c <= "Z") for c in text)


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if where:
            parts.append(f"{prefix}{where}: {message}")
        elif prefix:  # a check across fields of the conditions
            parts.append(f"{prefix.rstrip('.')}: {message}")
        else:  # a check across the rule's fields names its field itself
            parts.append(message)
    return "; ".join(parts)


@dataclass(frozen=True)
class Rule:
    """A rule that validated, as the engine evaluates it."""

    id: int
    version: int
    name: str
    rule_type: str
    target_type: str
    target_id: str
    severity: str
    conditions: _Common
    #: since when this version (the rule's meaning) exists (alert_rules.version_at, ddl/0026);
    #: None: unknown, the rule is taken as older than any snapshot
    version_at: datetime | None = None


def parse_conditions(rule_type: str, conditions: Any) -> _Common:
    """Validate ``conditions`` for ``rule_type``; RuleError naming the field otherwise."""
    model = CONDITIONS.get(rule_type)
    if model is None:
        raise RuleError(f"rule_type: {rule_type!r} is not one of {', '.join(RULE_TYPES)}")
    if not isinstance(conditions, dict):
        raise RuleError("conditions: must be a JSON object")
    try:
        return model.model_validate(conditions)
    except ValidationError as exc:
        raise RuleError(_describe(exc, "conditions.")) from None


def validate_fields(fields: dict[str, Any]) -> RuleFields:
    """A rule about to be stored: every column and the conditions of its type."""
    try:
        rule = RuleFields.model_validate(fields)
    except ValidationError as exc:
        raise RuleError(_describe(exc)) from None
    parse_conditions(rule.rule_type, rule.conditions)
    return rule


def rule_from_row(row: dict[str, Any]) -> Rule:
    """A row of alert_rules -> :class:`Rule`; RuleError when it does not validate."""
    fields = validate_fields({k: row[k] for k in ("name", "rule_type", "target_type", "target_id", "conditions")}
                             | {"severity": row.get("severity") or "medium"})
    return Rule(
        id=int(row["id"]), version=int(row["version"]), name=fields.name, rule_type=fields.rule_type,
        target_type=fields.target_type, target_id=fields.target_id, severity=fields.severity,
        conditions=parse_conditions(fields.rule_type, fields.conditions),
        version_at=row.get("version_at"),
    )


@dataclass(frozen=True)
class Snap:
    """The columns of one product snapshot a rule looks at."""

    asin: str
    scraped_at: datetime
    price: Decimal | None
    rating: Decimal | None
    bsr: dict[str, Any] = field(default_factory=dict)
    availability: str | None = None
    #: when the row was stored (product_snapshots.created_at, the database's clock); None: unknown
    created_at: datetime | None = None


@dataclass(frozen=True)
class Fired:
    """What one rule firing on one snapshot says (the AlertTriggered fields it decides)."""

    old_value: Any
    new_value: Any
    change_percentage: Decimal | None
    title: str
    message: str


def event_id(rule_id: int, version: int, asin: str, scraped_at: datetime) -> uuid.UUID:
    """The alert's identity: the same rule version firing on the same snapshot is the same alert."""
    at = scraped_at.astimezone(UTC).isoformat()
    return uuid.uuid5(EVENT_NAMESPACE, f"{rule_id}:{version}:{asin}:{at}")


def _pct(old: Decimal, new: Decimal) -> Decimal | None:
    if old == 0:
        return None
    return ((new - old) * 100 / old).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _directed(direction: str, delta: Decimal, threshold: Decimal) -> bool:
    if direction == "down":
        return delta <= -threshold
    if direction == "up":
        return delta >= threshold
    return abs(delta) >= threshold


def _crossed(old: Decimal, new: Decimal, below: Decimal | None, above: Decimal | None) -> bool:
    if below is not None:
        return old >= below > new
    assert above is not None
    return old <= above < new


def _rank(bsr: dict[str, Any], category: str) -> int | None:
    value = bsr.get(category)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _stock_class(availability: str | None) -> str | None:
    if availability is None:
        return None
    return "out_of_stock" if availability.lower() in OUT_OF_STOCK else "in_stock"


def applies(rule: Rule, prev: Snap, cur: Snap) -> bool:
    """``min_price``: judged on the new price, or the previous one when the new has none."""
    floor = rule.conditions.min_price
    if floor is None:
        return True
    price = cur.price if cur.price is not None else prev.price
    return price is not None and price >= floor


def evaluate(rule: Rule, prev: Snap, cur: Snap) -> Fired | None:
    """Does ``rule`` fire on ``cur`` compared with its predecessor ``prev``? (cooldown aside)"""
    if not applies(rule, prev, cur):
        return None
    c = rule.conditions
    if isinstance(c, PriceChange):
        return _price(rule, c, prev, cur)
    if isinstance(c, RatingChange):
        return _rating(rule, c, prev, cur)
    if isinstance(c, RankChange):
        return _rank_change(rule, c, prev, cur)
    if isinstance(c, StockChange):
        return _stock(rule, c, prev, cur)
    raise AssertionError(f"no evaluation for {type(c).__name__}")


def _price(rule: Rule, c: PriceChange, prev: Snap, cur: Snap) -> Fired | None:
    old, new = prev.price, cur.price
    if old is None or new is None:
        return None
    pct = _pct(old, new)
    if c.percent is not None:
        if pct is None or not _directed(c.direction, (new - old) * 100 / old, c.percent):
            return None
    elif c.amount is not None:
        if not _directed(c.direction, new - old, c.amount):
            return None
    elif not _crossed(old, new, c.below, c.above):
        return None
    word = "dropped" if new < old else "rose"
    return Fired(str(old), str(new), pct, f"{rule.name}: price {word} on {cur.asin}"[:200],
                 f"Price of {cur.asin} {word} from {old} to {new} ({pct}%)")


def _rating(rule: Rule, c: RatingChange, prev: Snap, cur: Snap) -> Fired | None:
    old, new = prev.rating, cur.rating
    if old is None or new is None:
        return None
    if c.amount is not None:
        if not _directed(c.direction, new - old, c.amount):
            return None
    elif not _crossed(old, new, c.below, c.above):
        return None
    return Fired(str(old), str(new), _pct(old, new), f"{rule.name}: rating of {cur.asin} {old} -> {new}"[:200],
                 f"Rating of {cur.asin} moved from {old} to {new}")


def _rank_change(rule: Rule, c: RankChange, prev: Snap, cur: Snap) -> Fired | None:
    old, new = _rank(prev.bsr, c.category), _rank(cur.bsr, c.category)
    if old is None or new is None:
        return None
    if c.rank_worse_than is not None:
        if not old <= c.rank_worse_than < new:
            return None
    elif c.rank_better_than is not None and not new < c.rank_better_than <= old:
        return None
    pct = _pct(Decimal(old), Decimal(new))
    return Fired(old, new, pct, f"{rule.name}: rank of {cur.asin} in {c.category} {old} -> {new}"[:200],
                 f"Best-sellers rank of {cur.asin} in {c.category} moved from {old} to {new}")


def _stock(rule: Rule, c: StockChange, prev: Snap, cur: Snap) -> Fired | None:
    old, new = _stock_class(prev.availability), _stock_class(cur.availability)
    if old is None or new is None or old == new or (c.to != "any" and c.to != new):
        return None
    return Fired(prev.availability, cur.availability, None,
                 f"{rule.name}: {cur.asin} is {new.replace('_', ' ')}"[:200],
                 f"Availability of {cur.asin} changed from {prev.availability} to {cur.availability}")


def could_have_seen(rule: Rule, prev: Snap, cur: Snap) -> bool:
    """Could this rule version have evaluated the pair (prev, cur) when it was live?

    Live, a pair is evaluated when either snapshot arrives (a late predecessor makes its
    successor compared again), with the rules as committed then. So the version saw the
    pair iff one of the two rows was stored at or after the version began. A snapshot read
    (a resync or ``cdc snapshot`` republishing every row) of a pair it could not have seen
    is history the rule did not exist for: evaluating it would fire last year's changes.

    The rows' storing time, not ``scraped_at``: a scrape stored after the rule (ingest lag,
    a backlog drained after a failover, ``replay events``, late data) was evaluated live,
    so it must be on a resync too; both times are the database's own clock. Unknown times
    count as seen (an alert kept rather than lost).
    """
    if rule.version_at is None or prev.created_at is None or cur.created_at is None:
        return True
    return max(prev.created_at, cur.created_at) >= rule.version_at


def fired_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
