"""Randomized market data written straight into the source tables (for the rule-engine tests).

Prices walk with occasional drops of 10-30 % (some crossing 19.99), ratings drift, the
Electronics rank crosses 1000 now and then, stock runs out and comes back. Snapshots are
inserted out of ``scraped_at`` order (chunks of the whole history shuffled), several
months apart so that they land in different monthly partitions; ``churn`` then updates,
deletes and moves (across partitions) some of them.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

START = datetime(2025, 1, 1, tzinfo=UTC)
MONTHS = 4


def asin(n: int) -> str:
    return f"B{n:09d}"


def ensure_months(pg: psycopg.Connection) -> None:
    months = [START + timedelta(days=31 * i) for i in range(MONTHS + 2)]
    pg.execute("SELECT ensure_partitions('product_snapshots'::regclass, %s::timestamptz[])", (months,))


def _series(rng: random.Random, n: int, count: int) -> list[tuple[Any, ...]]:
    span = MONTHS * 30 * 24 * 3600
    times = sorted(rng.sample(range(span), count))
    price = Decimal(rng.choice(["18.50", "24.99", "49.00", "120.00", "21.00"]))
    rating = Decimal(rng.choice(["3.80", "4.20", "4.60"]))
    rank = rng.randint(300, 3000)
    out_of_stock = False
    rows = []
    for t in times:
        roll = rng.random()
        if roll < 0.06:
            price = (price * Decimal(rng.uniform(0.70, 0.90))).quantize(Decimal("0.01"))
        elif roll < 0.12:
            price = (price * Decimal(rng.uniform(1.05, 1.30))).quantize(Decimal("0.01"))
        else:
            price = (price * Decimal(rng.uniform(0.97, 1.03))).quantize(Decimal("0.01"))
        price = max(price, Decimal("1.00"))
        if rng.random() < 0.08:
            rating = min(max(rating + Decimal(rng.choice(["-0.40", "-0.10", "0.10", "0.30"])), Decimal("1.00")),
                         Decimal("5.00"))
        rank = max(1, int(rank * rng.uniform(0.7, 1.4)))
        if rng.random() < 0.05:
            out_of_stock = not out_of_stock
        shown = None if (out_of_stock and rng.random() < 0.5) else price
        rows.append((
            asin(n), START + timedelta(seconds=t), shown, rating if rng.random() > 0.03 else None,
            json.dumps({"Electronics": rank, "Gadgets": rank // 3}),
            "out_of_stock" if out_of_stock else rng.choice(["in_stock", "in_stock", "limited_stock"]),
        ))
    return rows


def add_products(pg: psycopg.Connection, products: int) -> list[str]:
    asins = [asin(n) for n in range(products)]
    with pg.transaction():
        with pg.cursor() as cur:
            cur.executemany("INSERT INTO products (asin, title, category) VALUES (%s, %s, 'Electronics')",
                            [(a, f"Product {a}") for a in asins])
    return asins


def arrivals(products: int, per_product: int, seed: int) -> list[tuple[Any, ...]]:
    """Snapshot rows of products 0..products-1 in the order they arrive: mostly in time order,
    but one in ten late, after up to a fifth of the whole history (its successors included)."""
    rng = random.Random(seed)
    rows = [r for n in range(products) for r in _series(rng, n, per_product)]
    rows.sort(key=lambda r: r[1])
    delay = max(1, len(rows) // 5)
    keyed = [(i + (rng.randint(1, delay) if rng.random() < 0.1 else 0), i) for i in range(len(rows))]
    return [rows[i] for _k, i in sorted(keyed)]


def insert_rows(pg: psycopg.Connection, rows: list[tuple[Any, ...]], seed: int, chunk: int = 2000) -> None:
    """Commit ``rows`` in chunks, each chunk shuffled (out of order inside a transaction too)."""
    rng = random.Random(seed)
    ensure_months(pg)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        rng.shuffle(part)
        with pg.transaction():
            with pg.cursor() as cur:
                with cur.copy("COPY product_snapshots (asin, scraped_at, price, rating, bsr_data, "
                              "availability_status) FROM STDIN") as copy:
                    for row in part:
                        copy.write_row(row)


def seed_market(pg: psycopg.Connection, products: int, per_product: int, seed: int) -> None:
    """Snapshots of products 0..products-1 (made by ``add_products``), late and out of order."""
    insert_rows(pg, arrivals(products, per_product, seed), seed)


def churn(pg: psycopg.Connection, seed: int, fraction: float = 0.01) -> tuple[dict[str, int], set[tuple[str, Any]]]:
    """Updates of price and stock, deletes, and moves to another month's partition; the
    counts, and the (asin, scraped_at) keys the updates and moves left behind."""
    rng = random.Random(seed + 1)
    ids = [r[0] for r in pg.execute("SELECT id FROM product_snapshots ORDER BY id").fetchall()]
    picked = rng.sample(ids, max(3, int(len(ids) * fraction * 3)))
    third = len(picked) // 3
    updates, deletes, moves = picked[:third], picked[third:2 * third], picked[2 * third:]
    touched: set[tuple[str, Any]] = set()
    with pg.transaction():
        for i in updates:
            touched.update(pg.execute(
                "UPDATE product_snapshots SET price = round(price * %s, 2), availability_status = %s "
                "WHERE id = %s RETURNING asin, scraped_at",
                (Decimal(rng.choice(["0.5", "0.8", "1.2"])), rng.choice(["in_stock", "out_of_stock"]), i),
            ).fetchall())
    with pg.transaction():
        pg.execute("DELETE FROM product_snapshots WHERE id = ANY(%s)", (deletes,))
    moved = 0
    for i in moves:
        shift = timedelta(days=rng.choice([-45, -35, 35, 45]), seconds=rng.randint(1, 999))
        with pg.transaction():
            # a unique (asin, scraped_at) clash just skips this one move
            found = pg.execute(
                "UPDATE product_snapshots s SET scraped_at = s.scraped_at + %s WHERE id = %s AND NOT EXISTS "
                "(SELECT 1 FROM product_snapshots o WHERE o.asin = s.asin AND o.scraped_at = s.scraped_at + %s) "
                "RETURNING asin, scraped_at",
                (shift, i, shift),
            ).fetchall()
            moved += len(found)
            touched.update(found)
    return {"updated": len(updates), "deleted": len(deletes), "moved": moved}, touched
