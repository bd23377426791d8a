"""Competitive groups and alert rules for the simulated catalogue (pure).

With the same seed and product count, ``insights produce scrape`` creates exactly these
products (the catalogue is the market's first draw), so the demo can define rules on them
before a single scrape is produced, and groups once the products are stored.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from insights.generate.catalog import make_catalog


@dataclass(frozen=True)
class GroupDef:
    name: str
    main_asin: str
    category: str
    members: tuple[str, ...]


def catalogue(products: int, seed: int) -> list[tuple[str, str]]:
    """(ASIN, category) of the products a market of ``products`` with ``seed`` scrapes."""
    return [(item.asin, item.category) for item in make_catalog(random.Random(seed), products)]


def competitive_groups(products: Sequence[tuple[str, str | None]], size: int = 6, limit: int = 10) -> list[GroupDef]:
    """Per category (in name order), the first product by ASIN against the next ``size``."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for asin, category in products:
        if category:
            by_category[category].append(asin)
    groups = []
    for category in sorted(by_category):
        asins = sorted(by_category[category])
        if len(asins) < 2:
            continue
        groups.append(GroupDef(f"{category} watch", asins[0], category, tuple(asins[1: size + 1])))
        if len(groups) == limit:
            break
    return groups


def watch_rules(products: Sequence[tuple[str, str]], watched: int = 40) -> list[dict[str, Any]]:
    """Rules on the first ``watched`` products: a price drop of 10 % or more, and a stock-out."""
    rules: list[dict[str, Any]] = []
    for asin, _category in products[:watched]:
        rules.append({"name": f"{asin} price drop", "rule_type": "price_change", "target_type": "product",
                      "target_id": asin, "conditions": {"direction": "down", "percent": 10}, "severity": "high"})
        rules.append({"name": f"{asin} out of stock", "rule_type": "stock_change", "target_type": "product",
                      "target_id": asin, "conditions": {"to": "out_of_stock", "cooldown": "P1D"},
                      "severity": "medium"})
    return rules
