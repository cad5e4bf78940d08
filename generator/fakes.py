"""Fake but realistic people and places: names, emails, phones, postal addresses, geography.

Example::

    rng = stream_rng(7, "people")
    person = fake_person(rng, "US", US_CITIES[0], serial=1234)
    person.email          # 'maria.garcia1234@example.net'
    person.phone          # '+1 212-555-0147'

Nothing here is real personal data. Emails only use the reserved ``example.com/.net/.org``
domains (RFC 2606); phone numbers only use ranges reserved for fiction (North America
``555-0100``..``555-0199``, UK ``07700 900000``..``900999``) and are null elsewhere; streets are
generic names with random numbers. Cities, countries and coordinates are public geography.
"""

from __future__ import annotations

import math
import random
import unicodedata
from dataclasses import dataclass

__all__ = [
    "COUNTRIES",
    "FC_HUBS",
    "US_CITIES",
    "City",
    "Country",
    "Person",
    "distance_km",
    "fake_person",
]


@dataclass(frozen=True)
class City:
    name: str
    region: str
    country: str
    lat: float
    lon: float
    weight: float  # relative population: where stores and customers go
    postal_prefix: str
    area_code: str = ""


@dataclass(frozen=True)
class Country:
    code: str
    lat: float
    lon: float
    weight: float  # share among international customers; 0 = only seen as a fraud/travel origin
    cities: tuple[str, ...] = ()


# fmt: off
US_CITIES: tuple[City, ...] = tuple(City(n, s, "US", la, lo, w, z, a) for n, s, la, lo, w, z, a in (
    ("New York", "NY", 40.71, -74.01, 8.3, "100", "212"),
    ("Los Angeles", "CA", 34.05, -118.24, 3.9, "900", "213"),
    ("Chicago", "IL", 41.88, -87.63, 2.7, "606", "312"),
    ("Houston", "TX", 29.76, -95.37, 2.3, "770", "713"),
    ("Phoenix", "AZ", 33.45, -112.07, 1.6, "850", "602"),
    ("Philadelphia", "PA", 39.95, -75.17, 1.6, "191", "215"),
    ("San Antonio", "TX", 29.42, -98.49, 1.5, "782", "210"),
    ("San Diego", "CA", 32.72, -117.16, 1.4, "921", "619"),
    ("Dallas", "TX", 32.78, -96.80, 1.3, "752", "214"),
    ("San Jose", "CA", 37.34, -121.89, 1.0, "951", "408"),
    ("Austin", "TX", 30.27, -97.74, 0.96, "787", "512"),
    ("Jacksonville", "FL", 30.33, -81.66, 0.95, "322", "904"),
    ("Columbus", "OH", 39.96, -83.00, 0.9, "432", "614"),
    ("Charlotte", "NC", 35.23, -80.84, 0.87, "282", "704"),
    ("Indianapolis", "IN", 39.77, -86.16, 0.88, "462", "317"),
    ("Seattle", "WA", 47.61, -122.33, 0.75, "981", "206"),
    ("Denver", "CO", 39.74, -104.99, 0.72, "802", "303"),
    ("Washington", "DC", 38.91, -77.04, 0.69, "200", "202"),
    ("Boston", "MA", 42.36, -71.06, 0.68, "021", "617"),
    ("Nashville", "TN", 36.16, -86.78, 0.69, "372", "615"),
    ("Detroit", "MI", 42.33, -83.05, 0.64, "482", "313"),
    ("Portland", "OR", 45.52, -122.68, 0.65, "972", "503"),
    ("Las Vegas", "NV", 36.17, -115.14, 0.64, "891", "702"),
    ("Memphis", "TN", 35.15, -90.05, 0.63, "381", "901"),
    ("Louisville", "KY", 38.25, -85.76, 0.62, "402", "502"),
    ("Baltimore", "MD", 39.29, -76.61, 0.58, "212", "410"),
    ("Milwaukee", "WI", 43.04, -87.91, 0.57, "532", "414"),
    ("Albuquerque", "NM", 35.08, -106.65, 0.56, "871", "505"),
    ("Atlanta", "GA", 33.75, -84.39, 0.5, "303", "404"),
    ("Kansas City", "MO", 39.10, -94.58, 0.5, "641", "816"),
    ("Miami", "FL", 25.76, -80.19, 0.45, "331", "305"),
    ("Minneapolis", "MN", 44.98, -93.27, 0.43, "554", "612"),
    ("Sacramento", "CA", 38.58, -121.49, 0.52, "958", "916"),
    ("Raleigh", "NC", 35.78, -78.64, 0.47, "276", "919"),
    ("Tampa", "FL", 27.95, -82.46, 0.38, "336", "813"),
    ("Pittsburgh", "PA", 40.44, -79.99, 0.3, "152", "412"),
    ("St. Louis", "MO", 38.63, -90.20, 0.3, "631", "314"),
    ("Reno", "NV", 39.53, -119.81, 0.26, "895", "775"),
    ("Salt Lake City", "UT", 40.76, -111.89, 0.2, "841", "801"),
    ("Allentown", "PA", 40.61, -75.49, 0.12, "181", "610"),
))

#: Logistics hubs where fulfillment centers go, in order of preference.
FC_HUBS: tuple[str, ...] = (
    "Memphis", "Louisville", "Columbus", "Dallas", "Reno", "Allentown", "Atlanta", "Indianapolis",
    "Kansas City", "Salt Lake City", "Sacramento", "Jacksonville", "Phoenix", "Chicago",
)

COUNTRIES: dict[str, Country] = {c.code: c for c in (
    Country("US", 39.8, -98.6, 0.0),
    Country("CA", 45.4, -75.7, 0.30, ("Toronto", "Vancouver", "Montreal")),
    Country("GB", 51.5, -0.13, 0.18, ("London", "Manchester", "Bristol")),
    Country("DE", 52.5, 13.4, 0.12, ("Berlin", "Hamburg", "Munich")),
    Country("FR", 48.9, 2.35, 0.08, ("Paris", "Lyon", "Lille")),
    Country("MX", 19.4, -99.1, 0.12, ("Mexico City", "Guadalajara", "Monterrey")),
    Country("AU", -33.9, 151.2, 0.08, ("Sydney", "Melbourne", "Brisbane")),
    Country("JP", 35.7, 139.7, 0.06, ("Tokyo", "Osaka", "Yokohama")),
    Country("NL", 52.4, 4.9, 0.06, ("Amsterdam", "Rotterdam", "Utrecht")),
    # Only seen as card or IP countries (travel, fraud): never customers' home countries.
    Country("BR", -23.5, -46.6, 0.0), Country("NG", 6.5, 3.4, 0.0),
    Country("RU", 55.8, 37.6, 0.0), Country("VN", 10.8, 106.7, 0.0),
    Country("ID", -6.2, 106.8, 0.0), Country("IN", 19.1, 72.9, 0.0),
    Country("ZA", -26.2, 28.0, 0.0), Country("AR", -34.6, -58.4, 0.0),
    Country("TR", 41.0, 29.0, 0.0), Country("PH", 14.6, 121.0, 0.0),
)}

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Carlos", "Maria", "Wei", "Priya", "Ahmed", "Fatima", "Hiroshi", "Yuki", "Luca", "Sofia",
    "Noah", "Emma", "Liam", "Olivia", "Mateo", "Camila", "Aiden", "Chloe", "Ethan", "Ava", "Lucas",
    "Mia", "Daniel", "Grace", "Omar", "Leila", "Ivan", "Anna", "Kwame", "Amara", "Diego", "Lucia",
    "Hannah", "Samuel", "Zoe", "Benjamin", "Isabella", "Jamal", "Nora", "Ravi", "Elena", "Tomás",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark",
    "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres",
    "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell",
    "Mitchell", "Carter", "Roberts", "Patel", "Kim", "Chen", "Müller", "Schmidt", "Dubois",
    "Rossi", "Tanaka", "Silva", "Kowalski", "O'Brien", "Okafor", "Novak", "Haddad", "Johansson",
)
STREETS = (
    "Maple", "Oak", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset",
    "Ridge", "River", "Highland", "Meadow", "Willow", "Birch", "Spring", "Forest", "Valley",
    "Church", "Mill", "Franklin", "Jefferson", "Lincoln", "Madison", "Chestnut", "Walnut",
    "Magnolia", "Harbor", "Orchard", "Prospect", "Union", "Grove", "Bay", "Summit", "Sycamore",
)
SUFFIXES = ("St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way", "Pl", "Ter")
EMAIL_DOMAINS = ("example.com", "example.net", "example.org")
# fmt: on

_UPPER = "ABCDEFGHJKLMNPRSTUVWXYZ"


@dataclass(frozen=True)
class Person:
    """A fake person's contact data (all PII)."""

    first_name: str
    last_name: str
    email: str
    phone: str | None
    street: str
    city: str
    postal_code: str
    country: str


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _phone(rng: random.Random, country: str, area_code: str) -> str | None:
    if country in ("US", "CA"):
        area = area_code or rng.choice(("416", "604", "514"))
        return f"+1 {area}-555-01{rng.randrange(100):02d}"
    if country == "GB":
        return f"+44 7700 900{rng.randrange(1000):03d}"
    return None  # no range reserved for fiction that we know of: leave it empty


def _postal(rng: random.Random, country: str, prefix: str) -> str:
    r = rng.randrange
    if country == "US":
        return f"{prefix}{r(100):02d}"
    if country == "CA":
        u = _UPPER
        return f"{u[r(23)]}{r(10)}{u[r(23)]} {r(10)}{u[r(23)]}{r(10)}"
    if country == "GB":
        area = rng.choice(("SW", "NW", "E", "M", "BS"))
        return f"{area}{1 + r(20)} {r(10)}{_UPPER[r(23)]}{_UPPER[r(23)]}"
    if country == "NL":
        return f"{1000 + r(9000)} {_UPPER[r(23)]}{_UPPER[r(23)]}"
    if country == "JP":
        return f"{100 + r(900)}-{r(10000):04d}"
    if country == "AU":
        return f"{2000 + r(2000)}"
    return f"{10000 + r(89999)}"


def _street(rng: random.Random, country: str) -> str:
    name = rng.choice(STREETS)
    number = int(10 ** rng.uniform(0.0, 4.0))  # house numbers: many small, some 4-digit
    if country in ("US", "CA", "AU"):
        street = f"{number} {name} {rng.choice(SUFFIXES)}"
        return street + (f" Apt {1 + rng.randrange(40)}" if rng.random() < 0.2 else "")
    if country == "GB":
        return f"{number} {name} {rng.choice(('Road', 'Lane', 'Street', 'Close'))}"
    if country == "DE":
        return f"{name}straße {number}"
    if country == "FR":
        return f"{number} rue {name}"
    return f"{name} {number}"


def fake_person(rng: random.Random, country: str, city: City | None, serial: int) -> Person:
    """A fake person living in ``city`` (domestic) or in a city of ``country``.

    ``serial`` is folded into the email so that emails are unique within one world.
    """
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    style = rng.random()
    if style < 0.5:
        local = f"{_ascii(first)}.{_ascii(last)}{serial}"
    elif style < 0.8:
        local = f"{_ascii(first)[0]}{_ascii(last)}{serial}"
    else:
        local = f"{_ascii(last)}.{_ascii(first)}.{serial}"
    email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    if city is not None:
        city_name, prefix, area = city.name, city.postal_prefix, city.area_code
    else:
        city_name, prefix, area = rng.choice(COUNTRIES[country].cities), "", ""
    phone = _phone(rng, country, area) if rng.random() < 0.88 else None
    return Person(
        first,
        last,
        email,
        phone,
        _street(rng, country),
        city_name,
        _postal(rng, country, prefix),
        country,
    )


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 12_742.0 * math.asin(math.sqrt(a))
