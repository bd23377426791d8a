"""``insights rules add | list | show | disable | test``: the alert rules the engine evaluates.

``add`` validates a rule with the same models the engine uses (docs/alert-rules.md) and
refuses an invalid one naming the field; ``test`` replays a rule over the stored
snapshots of a product, in ``scraped_at`` order, and shows where it would have fired.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from consumers.rules.conditions import RuleError, Snap, evaluate, rule_from_row, validate_fields
from insights.cli.confirm import confirm
from insights.cli.context import console, settings_of
from insights.cli.tables import print_table
from streams.pg import connect

app = typer.Typer(help="Alert rules evaluated live by `insights consume rules` (docs/alert-rules.md).",
                  no_args_is_help=True)

_RULE_COLUMNS = ("id, version, name, rule_type, target_type, target_id, conditions, severity, is_active, "
                 "trigger_count, last_triggered_at, created_at, updated_at")


def _conditions(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleError(f"conditions: not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise RuleError("conditions: must be a JSON object, such as '{\"direction\": \"down\", \"percent\": 10}'")
    return value


@app.command()
def add(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="what the alerts are titled with"),
    rule_type: str = typer.Option(..., "--type", help="price_change, rating_change, rank_change or stock_change"),
    conditions: str = typer.Option(..., "--conditions", help="JSON object, e.g. '{\"direction\": \"down\", \"percent\": 10}'"),
    asin: str | None = typer.Option(None, "--asin", help="target: one product"),
    group: int | None = typer.Option(None, "--group", help="target: every active member of a competitive group"),
    severity: str = typer.Option("medium", "--severity", help="low, medium, high or critical"),
) -> None:
    """Store a new rule (validated first; an invalid one is refused with the field at fault)."""
    if (asin is None) == (group is None):
        raise typer.BadParameter("give exactly one of --asin or --group", param_hint="--asin/--group")
    fields = validate_fields({
        "name": name, "rule_type": rule_type, "conditions": _conditions(conditions), "severity": severity,
        "target_type": "product" if asin is not None else "group",
        "target_id": asin if asin is not None else str(group),
    })
    with connect(settings_of(ctx).pg, "rules-cli") as conn:
        row = conn.execute(
            "INSERT INTO alert_rules (name, rule_type, target_type, target_id, conditions, severity) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (fields.name, fields.rule_type, fields.target_type, fields.target_id, Jsonb(fields.conditions),
             fields.severity),
        ).fetchone()
        conn.commit()
    assert row is not None
    console.print(f"rule {row[0]} added: {fields.rule_type} on {fields.target_type} {fields.target_id}", highlight=False)


def _rows(conn: Any, where: str = "", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_RULE_COLUMNS} FROM alert_rules {where} ORDER BY id", params).fetchall()


def _validity(row: dict[str, Any]) -> str:
    try:
        rule_from_row(row)
    except RuleError as exc:
        return f"INVALID: {exc}"
    return "ok"


@app.command(name="list")
def list_(ctx: typer.Context, all_: bool = typer.Option(False, "--all", help="include disabled rules")) -> None:
    """The rules, with whether each validates (an invalid one is skipped by the engine)."""
    with connect(settings_of(ctx).pg, "rules-cli", read_only=True) as conn:
        rows = _rows(conn, "" if all_ else "WHERE is_active IS TRUE")
    print_table(
        console, ["id", "name", "type", "target", "active", "version", "fired", "valid"],
        [[str(r["id"]), r["name"], r["rule_type"], f"{r['target_type']}:{r['target_id']}", str(r["is_active"]),
          str(r["version"]), str(r["trigger_count"] or 0), _validity(r)] for r in rows],
        elide_column=1, title="alert rules",
    )


def _one(conn: Any, rule_id: int) -> dict[str, Any]:
    rows = _rows(conn, "WHERE id = %s", (rule_id,))
    if not rows:
        raise RuleError(f"no alert rule {rule_id}; see `insights rules list --all`")
    return rows[0]


@app.command()
def show(ctx: typer.Context, rule_id: int = typer.Argument(..., help="the rule's id")) -> None:
    """One rule: every field, whether it validates, and its latest alerts."""
    with connect(settings_of(ctx).pg, "rules-cli", read_only=True) as conn:
        row = _one(conn, rule_id)
        alerts = conn.execute(
            "SELECT triggered_at, target_asin, title FROM alerts WHERE rule_id = %s ORDER BY triggered_at DESC LIMIT 10",
            (rule_id,),
        ).fetchall()
    for key, value in row.items():
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        console.print(f"{key:18} {text}", highlight=False, markup=False)
    console.print(f"{'valid':18} {_validity(row)}", highlight=False, markup=False)
    for at, asin, title in alerts:
        console.print(f"  alert {at.isoformat()} {asin} {title}", highlight=False, markup=False)


@app.command()
def disable(
    ctx: typer.Context,
    rule_id: int = typer.Argument(..., help="the rule's id"),
    yes: bool = typer.Option(False, "--yes", help="do not ask"),
) -> None:
    """Stop evaluating a rule (its alerts stay; `add` a new rule to start again)."""
    with connect(settings_of(ctx).pg, "rules-cli") as conn:
        row = _one(conn, rule_id)
        if not row["is_active"]:
            console.print(f"rule {rule_id} is already disabled", highlight=False)
            return
        console.print(f"will disable rule {rule_id} ({row['name']}, {row['rule_type']} on "
                      f"{row['target_type']} {row['target_id']})", highlight=False, markup=False)
        confirm(f"disable rule {rule_id}?", yes=yes, refused="no rule disabled")
        conn.execute("UPDATE alert_rules SET is_active = false, updated_at = now() WHERE id = %s", (rule_id,))
        conn.commit()
    console.print(f"rule {rule_id} disabled", highlight=False)


def _snaps(conn: Any, asin: str) -> list[Snap]:
    rows = conn.execute(
        "SELECT scraped_at, price, rating, bsr_data, availability_status FROM product_snapshots "
        "WHERE asin = %s ORDER BY scraped_at", (asin,),
    ).fetchall()
    return [Snap(asin, at, price, rating, bsr if isinstance(bsr, dict) else {}, status)
            for at, price, rating, bsr, status in rows]


@app.command()
def test(
    ctx: typer.Context,
    rule_id: int = typer.Argument(..., help="the rule's id"),
    asin: str | None = typer.Option(None, "--asin", help="the product (default: the rule's own product)"),
) -> None:
    """Which stored snapshots of a product the rule would have fired on (in scraped_at order)."""
    with connect(settings_of(ctx).pg, "rules-cli", read_only=True) as conn:
        rule = rule_from_row(_one(conn, rule_id))
        if asin is None:
            if rule.target_type != "product":
                raise typer.BadParameter("a group rule needs --asin (one of the group's members)", param_hint="--asin")
            asin = rule.target_id
        snaps = _snaps(conn, asin)
    cooldown = rule.conditions.cooldown
    last: datetime | None = None
    rows: list[list[str]] = []
    for prev, cur in zip(snaps, snaps[1:], strict=False):
        fired = evaluate(rule, prev, cur)
        if fired is None or (cooldown is not None and last is not None and cur.scraped_at - last < cooldown):
            continue
        last = cur.scraped_at
        rows.append([cur.scraped_at.isoformat(), str(fired.old_value), str(fired.new_value),
                     "" if fired.change_percentage is None else f"{fired.change_percentage}%"])
    if rows:
        print_table(console, ["scraped_at", "from", "to", "change"], rows, elide_column=0)
    console.print(f"rule {rule_id} over {len(snaps)} snapshots of {asin}: {len(rows)} firing(s)", highlight=False)
