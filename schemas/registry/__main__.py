"""Run the schema registry: read its Kafka topic, then serve the REST API with uvicorn.

Example::

    python -m retail_backbone.schemas.registry --port 8085 --bootstrap 127.0.0.1:9092

The port opens only once the whole topic has been read, so a client never sees a partial state.
Exit code 1 when Kafka cannot be reached or the topic is unusable. Run one instance per topic
(see ``store``).
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from retail_backbone.schemas.registry.app import create_app
from retail_backbone.schemas.registry.store import DEFAULT_TOPIC, KafkaStore, StoreUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retail_backbone.schemas.registry",
        description="Schema registry (Confluent REST API) stored in a compacted Kafka topic.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8085, help="port to listen on")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="compacted topic holding the state")
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for Kafka at start"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    store = KafkaStore(args.bootstrap, args.topic)
    try:
        store.start(timeout=args.startup_timeout)
    except StoreUnavailable as exc:
        print(f"schema registry: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        uvicorn.run(
            create_app(store),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
            lifespan="off",
        )
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
