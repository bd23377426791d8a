"""The static side of the simulated market: products with brands, categories, titles, media.

Everything here is drawn once per product from a seeded ``random.Random`` and then
reused by every scrape of that product (a real product page's title and bullet points
rarely change), which also keeps generation cheap.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from decimal import Decimal

ASIN_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class CategoryDef:
    name: str
    #: (subcategory for the BSR map, typical list price range in USD)
    subcategories: tuple[str, ...]
    price_range: tuple[float, float]
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    #: feature name -> possible values (what a parser would extract from bullet points)
    features: dict[str, tuple[str, ...]]
    brands: tuple[str, ...]


CATEGORIES: tuple[CategoryDef, ...] = (
    CategoryDef(
        "Electronics",
        ("Headphones", "Portable Bluetooth Speakers", "Power Banks", "Smartwatches"),
        (15.0, 350.0),
        ("Wireless Earbuds", "Bluetooth Speaker", "Power Bank", "Smartwatch", "Noise Cancelling Headphones"),
        ("Waterproof", "Compact", "Fast-Charging", "Premium", "Lightweight"),
        {
            "battery_life": ("8 hours", "12 hours", "24 hours", "40 hours"),
            "connectivity": ("Bluetooth 5.0", "Bluetooth 5.3", "USB-C", "Wi-Fi"),
            "water_resistance": ("IPX4", "IPX5", "IPX7", "none"),
        },
        ("Soundcore", "JLab", "Anker", "Sony", "Tozo", "Amazfit"),
    ),
    CategoryDef(
        "Home & Kitchen",
        ("Coffee Makers", "Air Fryers", "Cookware Sets", "Food Storage"),
        (12.0, 250.0),
        ("Air Fryer", "Coffee Maker", "Nonstick Pan Set", "Glass Food Containers", "Electric Kettle"),
        ("Stainless Steel", "BPA-Free", "Family Size", "Programmable", "Dishwasher Safe"),
        {
            "capacity": ("1.5 L", "4 qt", "6 qt", "12 cups"),
            "material": ("stainless steel", "glass", "ceramic", "aluminium"),
            "wattage": ("900 W", "1500 W", "1700 W"),
        },
        ("Ninja", "COSORI", "Keurig", "T-fal", "Rubbermaid", "Instant Pot"),
    ),
    CategoryDef(
        "Sports & Outdoors",
        ("Yoga Mats", "Water Bottles", "Camping Tents", "Resistance Bands"),
        (8.0, 220.0),
        ("Yoga Mat", "Insulated Water Bottle", "Camping Tent", "Resistance Bands Set", "Hiking Backpack"),
        ("Non-Slip", "Ultralight", "Insulated", "Extra Thick", "Heavy Duty"),
        {
            "material": ("TPE", "stainless steel", "ripstop nylon", "latex"),
            "size": ("one size", "32 oz", "2-person", "72 x 24 in"),
            "weight_class": ("light", "medium", "heavy"),
        },
        ("Gaiam", "Hydro Flask", "Coleman", "Fit Simplify", "Osprey", "Owala"),
    ),
    CategoryDef(
        "Beauty & Personal Care",
        ("Skin Care", "Hair Care", "Electric Shavers", "Oral Care"),
        (6.0, 120.0),
        ("Vitamin C Serum", "Hair Dryer", "Electric Toothbrush", "Moisturizer", "Beard Trimmer"),
        ("Hydrating", "Fragrance-Free", "Cordless", "Dermatologist-Tested", "Travel Size"),
        {
            "skin_type": ("all", "dry", "oily", "sensitive"),
            "volume": ("1 fl oz", "1.7 fl oz", "8 fl oz"),
            "power_source": ("battery", "corded", "rechargeable"),
        },
        ("CeraVe", "Philips", "Revlon", "Oral-B", "Neutrogena", "Braun"),
    ),
    CategoryDef(
        "Toys & Games",
        ("Building Toys", "Board Games", "Puzzles", "Remote Control Toys"),
        (9.0, 160.0),
        ("Building Set", "Board Game", "1000 Piece Puzzle", "RC Car", "Magnetic Tiles"),
        ("Family", "STEM", "Classic", "Deluxe", "Travel"),
        {
            "age_range": ("3+", "6+", "8+", "12+"),
            "players": ("1", "2-4", "2-6", "3-8"),
            "pieces": ("100", "500", "1000"),
        },
        ("LEGO", "Hasbro", "Ravensburger", "Mattel", "Magna-Tiles", "Melissa & Doug"),
    ),
)

COLOURS = ("Black", "White", "Navy", "Grey", "Red", "Sage Green", "Blush Pink")
SIZES = ("Small", "Medium", "Large", "XL")
#: the Avro ExtractionMethod symbols
EXTRACTION_METHODS = ("PARSER", "AI", "MANUAL")


@dataclass(frozen=True)
class FeatureDef:
    category: str  # feature category (e.g. "specs")
    name: str
    value: str
    confidence: Decimal
    method: str


@dataclass(frozen=True)
class CatalogItem:
    asin: str
    title: str
    brand: str
    category: str
    subcategory: str
    manufacturer: str
    model: str
    #: length, width, height in inches (Decimal) and "unit"
    dimensions: dict[str, object]
    weight_kg: Decimal
    list_price: float
    #: 1 or 2: how many decimals this product's page shows for its rating
    rating_decimals: int
    #: how often this product is scraped, hours
    scrape_every_h: float
    #: relative demand (reviews per day, rank)
    popularity: float
    bullet_points: tuple[str, ...]
    description: str
    images: tuple[str, ...]
    #: sibling variations: (asin, attributes such as {"color": "Red"})
    variations: tuple[tuple[str, dict[str, str]], ...]
    features: tuple[FeatureDef, ...]
    prime: bool


def make_asin(rng: random.Random) -> str:
    """``B0`` + 8 uppercase alphanumerics, like Amazon's own catalogue numbers."""
    return "B0" + "".join(rng.choices(ASIN_ALPHABET, k=8))


def _features(rng: random.Random, cat: CategoryDef) -> tuple[FeatureDef, ...]:
    found = []
    for name, values in cat.features.items():
        method = rng.choices(EXTRACTION_METHODS, weights=(6, 3, 1))[0]
        confidence = Decimal("1.00") if method == "MANUAL" else Decimal(rng.randint(60, 99)) / 100
        found.append(FeatureDef("specs", name, rng.choice(values), confidence, method))
    return tuple(found)


def make_item(rng: random.Random, asin: str) -> CatalogItem:
    cat = rng.choice(CATEGORIES)
    brand = rng.choice(cat.brands)
    noun = rng.choice(cat.nouns)
    adjective = rng.choice(cat.adjectives)
    colour = rng.choice(COLOURS)
    model = f"{brand[:3].upper()}-{rng.randint(100, 9999)}"
    title = f"{brand} {adjective} {noun}, {colour} ({model})"
    low, high = cat.price_range
    # list prices cluster at the cheap end, as they do on the site; x.99 endings
    list_price = round(low + (high - low) * rng.random() ** 2.5) + 0.99
    slug = title.lower().replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
    images = tuple(
        f"https://m.media-amazon.com/images/I/{''.join(rng.choices(ASIN_ALPHABET, k=11))}._AC_SL1500_.jpg"
        for _ in range(rng.randint(3, 7))
    )
    # sibling ASINs that differ by colour and maybe size (the page's twister)
    colours = sorted(rng.sample(COLOURS, rng.randint(2, 4))) if rng.random() < 0.6 else []
    sizes = list(SIZES[: rng.randint(2, 3)]) if colours and rng.random() < 0.3 else []
    variations = tuple(
        (make_asin(rng), {"color": c, **({"size": z} if z else {})})
        for c in colours
        for z in (sizes or [""])
    )
    bullets = (
        f"{adjective.upper()} DESIGN: a {noun.lower()} from {brand} built for everyday use",
        f"WHAT YOU GET: 1 x {noun}, quick start guide, {rng.choice((12, 18, 24))}-month warranty",
        f"TRUSTED BY CUSTOMERS: part of the {cat.name} range ({slug[:40]})",
    )
    return CatalogItem(
        asin=asin,
        title=title,
        brand=brand,
        category=cat.name,
        subcategory=rng.choice(cat.subcategories),
        manufacturer=f"{brand} Inc.",
        model=model,
        dimensions={
            "length": Decimal(f"{rng.uniform(2, 40):.1f}"),
            "width": Decimal(f"{rng.uniform(2, 30):.1f}"),
            "height": Decimal(f"{rng.uniform(1, 25):.1f}"),
            "unit": "IN",
        },
        weight_kg=Decimal(f"{rng.uniform(0.1, 12.0):.2f}"),
        list_price=list_price,
        rating_decimals=rng.choice((1, 1, 2)),
        scrape_every_h=rng.choice((1.0, 4.0, 6.0, 12.0, 24.0)),
        popularity=rng.lognormvariate(0, 1.2),
        bullet_points=bullets,
        description=f"{title}. {bullets[0].capitalize()}.",
        images=images,
        variations=variations,
        features=_features(rng, cat),
        prime=rng.random() < 0.7,
    )


def make_catalog(rng: random.Random, products: int) -> list[CatalogItem]:
    """``products`` items with distinct ASINs."""
    seen: set[str] = set()
    items: list[CatalogItem] = []
    while len(items) < products:
        asin = make_asin(rng)
        if asin in seen:
            continue
        seen.add(asin)
        items.append(make_item(rng, asin))
    return items
