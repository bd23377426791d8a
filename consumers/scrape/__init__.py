"""The scrape sink: ProductScraped events into products, product_snapshots, product_features."""

from consumers.scrape.sink import SPEC, ScrapeSink

__all__ = ["SPEC", "ScrapeSink"]
