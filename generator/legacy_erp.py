"""Seed a "legacy ERP" PostgreSQL database with the world's starting master data and stock.

Example::

    world = build_world(cfg)
    seed_legacy_erp(world, "host=127.0.0.1 port=5432 user=backbone dbname=backbone")
    # -> database legacy_erp with tables locations, products, customers, inventory

The ERP is the system of record as of the run's start (``config.start`` 00:00 UTC): products at
their starting list prices, customers with their PII (this database is the profile store),
on-hand stock per (sku, location) with reorder points. The generated events are the changes
after that moment, so ``inventory.on_hand`` plus later ``inventory_adjusted`` deltas (and
``stock_counted`` resets) gives stock at any time. Tables have primary keys, so logical decoding
(wal2json) can stream later changes. Reseeding drops and recreates the tables in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from retail_backbone.generator.world import SEGMENTS, World

__all__ = ["DDL", "ErpSummary", "seed_legacy_erp"]

DDL = """
CREATE TABLE locations (
    location_id  varchar(16) PRIMARY KEY,
    kind         varchar(8)   NOT NULL CHECK (kind IN ('STORE', 'FC')),
    name         varchar(120) NOT NULL,
    city         varchar(80)  NOT NULL,
    region       varchar(8)   NOT NULL,
    country      char(2)      NOT NULL,
    latitude     numeric(8,5) NOT NULL,
    longitude    numeric(8,5) NOT NULL
);
CREATE TABLE products (
    sku          varchar(20)  PRIMARY KEY,
    title        varchar(200) NOT NULL,
    brand        varchar(80)  NOT NULL,
    category     varchar(60)  NOT NULL,
    subcategory  varchar(60)  NOT NULL,
    price_band   varchar(10)  NOT NULL,
    list_price   numeric(12,2) NOT NULL CHECK (list_price > 0),
    attributes   jsonb        NOT NULL DEFAULT '{}',
    active       boolean      NOT NULL,
    updated_at   timestamptz  NOT NULL
);
CREATE TABLE customers (
    customer_id      varchar(20)  PRIMARY KEY,
    email            varchar(200) NOT NULL,
    phone            varchar(40),
    street           varchar(200),
    city             varchar(80),
    postal_code      varchar(20),
    country          char(2)      NOT NULL,
    home_store       varchar(16)  NOT NULL REFERENCES locations (location_id),
    segment          varchar(40)  NOT NULL,
    signup_time      timestamptz  NOT NULL,
    marketing_opt_in boolean      NOT NULL,
    updated_at       timestamptz  NOT NULL
);
CREATE TABLE inventory (
    sku            varchar(20) NOT NULL REFERENCES products (sku),
    location_id    varchar(16) NOT NULL REFERENCES locations (location_id),
    on_hand        integer     NOT NULL CHECK (on_hand >= 0),
    reorder_point  integer     NOT NULL,
    order_up_to    integer     NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (sku, location_id)
);
CREATE INDEX customers_email ON customers (email);
CREATE INDEX inventory_location ON inventory (location_id);
"""
_TABLES = ("inventory", "customers", "products", "locations")  # drop order (foreign keys)


@dataclass
class ErpSummary:
    """Rows written per table of ``database``."""

    database: str
    rows: dict[str, int]

    def to_dict(self) -> dict:
        return {"database": self.database, "rows": self.rows}


def _ensure_database(dsn: str, database: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def seed_legacy_erp(world: World, dsn: str, database: str = "legacy_erp") -> ErpSummary:
    """(Re)create ``database`` on the server of ``dsn`` and load the world's starting state.

    Args:
        world: the world (``build_world(cfg)``) whose start state to load.
        dsn: libpq connection string of any database on the server (used to create ``database``).
        database: name of the ERP database.

    Returns:
        Row counts per table.
    """
    _ensure_database(dsn, database)
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    as_of = datetime.fromtimestamp(world.config.start_ms / 1000, tz=UTC)
    rows: dict[str, int] = {}
    locs = world.locations
    with psycopg.connect(make_conninfo(**params)) as conn, conn.cursor() as cur:
        for table in _TABLES:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        cur.execute(DDL)

        with cur.copy(
            "COPY locations (location_id, kind, name, city, region, country, latitude, longitude)"
            " FROM STDIN"
        ) as copy:
            for loc in locs:
                city = loc.city
                copy.write_row(
                    (
                        loc.location_id,
                        loc.kind,
                        loc.name,
                        city.name,
                        city.region,
                        city.country,
                        city.lat,
                        city.lon,
                    )
                )
        rows["locations"] = len(locs)

        with cur.copy(
            "COPY products (sku, title, brand, category, subcategory, price_band, list_price,"
            " attributes, active, updated_at) FROM STDIN"
        ) as copy:
            for p in world.products:
                copy.write_row(
                    (
                        p.sku,
                        p.title,
                        world.brands[p.brand].name,
                        p.categories[0],
                        p.categories[1],
                        p.price_band,
                        p.list_price,
                        json.dumps(p.attributes, sort_keys=True),
                        True,
                        as_of,
                    )
                )
        rows["products"] = len(world.products)

        with cur.copy(
            "COPY customers (customer_id, email, phone, street, city, postal_code, country,"
            " home_store, segment, signup_time, marketing_opt_in, updated_at) FROM STDIN"
        ) as copy:
            for c in world.customers:
                person = c.person
                copy.write_row(
                    (
                        c.customer_id,
                        person.email,
                        person.phone,
                        person.street,
                        person.city,
                        person.postal_code,
                        person.country,
                        locs[c.home_store].location_id,
                        SEGMENTS[c.segment].name,
                        datetime.fromtimestamp(c.signup_ms / 1000, tz=UTC),
                        c.marketing_opt_in,
                        as_of,
                    )
                )
        rows["customers"] = len(world.customers)

        n_loc, n = world.n_locations, 0
        with cur.copy(
            "COPY inventory (sku, location_id, on_hand, reorder_point, order_up_to, updated_at)"
            " FROM STDIN"
        ) as copy:
            for i, carried in enumerate(world.carried):
                if not carried:
                    continue
                product, location = divmod(i, n_loc)
                copy.write_row(
                    (
                        world.products[product].sku,
                        locs[location].location_id,
                        world.initial_on_hand[i],
                        world.reorder_point[i],
                        world.order_up_to[i],
                        as_of,
                    )
                )
                n += 1
        rows["inventory"] = n
        for table in _TABLES:
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return ErpSummary(database, rows)
