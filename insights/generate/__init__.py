"""A seeded simulation of an Amazon market: scrape and alert events for demos, tests, benchmarks.

``Market`` (market.py) moves prices, ratings, ranks and stock; ``alert_feed``
(alerts.py) raises alerts from it; ``deliver`` (delivery.py) adds duplicates and
disorder on request; encode.py maps everything onto the Avro event records and
run.py publishes a :class:`Plan` to Kafka.
"""

from insights.generate.alerts import alert_feed, alert_rules
from insights.generate.delivery import Delivery, deliver
from insights.generate.encode import alert_model, alert_record, scrape_model, scrape_record
from insights.generate.market import Market
from insights.generate.records import Alert, AlertRuleDef, Scrape

__all__ = [
    "Alert",
    "AlertRuleDef",
    "Delivery",
    "Market",
    "Scrape",
    "alert_feed",
    "alert_model",
    "alert_record",
    "alert_rules",
    "deliver",
    "scrape_model",
    "scrape_record",
]
