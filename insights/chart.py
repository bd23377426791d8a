"""A PNG price chart from summaries.price_daily, with the products' rule alerts marked.

The products shown are those with the largest drop from their highest daily high to a
later daily low, the products a price rule fired on first (a chart of drops nobody was
alerted to would not show what the rules did); each line is the daily close, each alert of the rule engine a marker at
its day and new price. Rendered with matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

LARGEST_DROPS = """
WITH d AS (
    SELECT asin, day, high, low,
           max(high) OVER (PARTITION BY asin ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS peak
    FROM summaries.price_daily WHERE high IS NOT NULL
)
SELECT asin, max((peak - low) / peak) AS drop,
       EXISTS (SELECT 1 FROM alerts a WHERE a.target_asin = d.asin AND a.alert_type = 'price_change'
                 AND a.metadata ->> 'source' = 'rules-engine') AS alerted
FROM d WHERE peak > 0 GROUP BY asin
ORDER BY alerted DESC, drop DESC, asin LIMIT %(limit)s
"""


def price_chart(conn: psycopg.Connection, path: Path, products: int = 4) -> list[tuple[str, float, int]]:
    """Draw the chart to ``path``; (ASIN, largest drop as a fraction, alerts marked) per product shown."""
    import matplotlib  # the CLI's start-up of every other command does not pay for it

    matplotlib.use("Agg")
    from matplotlib import pyplot

    picked = [(a, float(d)) for a, d, _alerted in conn.execute(LARGEST_DROPS, {"limit": products}).fetchall()]
    figure, axes = pyplot.subplots(figsize=(10, 5), dpi=100)
    shown = []
    for asin, drop in picked:
        days = conn.execute(
            "SELECT day, close FROM summaries.price_daily WHERE asin = %s AND close IS NOT NULL ORDER BY day", (asin,)
        ).fetchall()
        line = axes.plot([d for d, _ in days], [float(c) for _, c in days], label=f"{asin} (-{drop:.0%})")[0]
        alerts = conn.execute(
            "SELECT triggered_at, new_value FROM alerts WHERE target_asin = %s AND alert_type = 'price_change' "
            "AND metadata ->> 'source' = 'rules-engine' ORDER BY triggered_at", (asin,),
        ).fetchall()
        marked = [(at.date(), float(v)) for at, v in alerts if isinstance(v, (str, int, float))]
        if marked:
            axes.scatter([d for d, _ in marked], [v for _, v in marked], marker="v", s=40, color=line.get_color(),
                         zorder=3)
        shown.append((asin, drop, len(marked)))
    axes.set_title("Daily close of the alerted products with the largest drops (triangles: rule alerts)")
    axes.set_xlabel("day (UTC)")
    axes.set_ylabel("price")
    if shown:
        axes.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    pyplot.close(figure)
    return shown
