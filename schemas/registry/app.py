"""The Confluent Schema Registry REST API over a ``KafkaStore``, as a Starlette app.

Example::

    store = KafkaStore("127.0.0.1:9092")
    store.start()
    uvicorn.run(create_app(store), host="127.0.0.1", port=8085)

    # then, from any Confluent client:
    # SchemaRegistryClient({"url": "http://127.0.0.1:8085"}).register_schema(subject, schema)

Status codes, error codes (``{"error_code": ..., "message": ...}``) and response bodies follow
Confluent's. Responses are ``application/vnd.schemaregistry.v1+json`` unless the client accepts
only ``application/json``. Request bodies may be sent as ``application/vnd.schemaregistry.v1+json``,
``application/vnd.schemaregistry+json``, ``application/json`` or ``application/octet-stream`` (or
without a content type).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from retail_backbone.schemas.compatibility import Level
from retail_backbone.schemas.registry.store import (
    LATEST,
    SUPPORTED_TYPES,
    KafkaStore,
    RegistryError,
)

__all__ = ["SCHEMA_REGISTRY_V1_JSON", "create_app"]

log = logging.getLogger(__name__)

SCHEMA_REGISTRY_V1_JSON = "application/vnd.schemaregistry.v1+json"
_SCHEMA_REGISTRY_JSON = "application/vnd.schemaregistry+json"
_ACCEPTED_BODIES = {
    SCHEMA_REGISTRY_V1_JSON,
    _SCHEMA_REGISTRY_JSON,
    "application/json",
    "application/octet-stream",
}


# -- request and response helpers ----------------------------------------------------------------


def _media_type(request: Request) -> str:
    """Confluent's produced types, most preferred first; plain JSON only if nothing else fits."""
    accept = request.headers.get("accept", "").lower()
    if not accept or "*/*" in accept or SCHEMA_REGISTRY_V1_JSON in accept:
        return SCHEMA_REGISTRY_V1_JSON
    if _SCHEMA_REGISTRY_JSON in accept:
        return _SCHEMA_REGISTRY_JSON
    if "application/json" in accept:
        return "application/json"
    return SCHEMA_REGISTRY_V1_JSON


def _reply(request: Request, content: Any, status: int = 200) -> Response:
    body = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status, media_type=_media_type(request))


def _error(request: Request, status: int, error_code: int, message: str) -> Response:
    return _reply(request, {"error_code": error_code, "message": message}, status)


def _flag(request: Request, name: str) -> bool:
    # As JAX-RS reads a boolean query parameter: "true" in any case; anything else is false.
    # (confluent-kafka's Python client sends "True"/"False".)
    value = request.query_params.get(name)
    return value is not None and value.strip().lower() == "true"


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise RegistryError(400, 400, f"query parameter {name} must be an integer") from None


def _page(request: Request, items: list) -> list:
    offset = max(0, _int_param(request, "offset", 0))
    limit = _int_param(request, "limit", -1)
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _version(text: str) -> int:
    """A path version: ``latest``, ``-1`` (also latest) or 1..2^31-1; else 42202."""
    if text.strip().lower() == "latest":
        return LATEST
    try:
        number = int(text.strip())
    except ValueError:
        number = 0
    if number == LATEST or 1 <= number <= 2**31 - 1:
        return number
    raise RegistryError(
        422,
        42202,
        f"The specified version '{text}' is not a valid version id. Allowed values are between "
        '[1, 2^31-1] and the string "latest"',
    )


async def _body(request: Request) -> dict:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in _ACCEPTED_BODIES:
        raise RegistryError(415, 415, "HTTP 415 Unsupported Media Type")
    raw = await request.body()
    if not raw.strip():
        raise RegistryError(422, 422, "Request body is empty; a JSON object is required")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(400, 400, f"Malformed JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise RegistryError(422, 422, "The request body must be a JSON object")
    return body


def _schema_request(body: dict) -> tuple[object, object]:
    """The ``schema`` and ``schemaType`` of a register/lookup/compatibility request body.

    Raises:
        RegistryError: 42201 for what this registry does not support (references, metadata and
            rule sets); 42205 for an explicit id or version (Confluent's IMPORT mode only).
    """
    if body.get("references"):
        raise RegistryError(422, 42201, "Schema references are not supported yet by this registry")
    if body.get("metadata") or body.get("ruleSet"):
        raise RegistryError(
            422, 42201, "Schema metadata and rule sets are not supported by this registry"
        )
    if body.get("id") not in (None, -1, 0) or body.get("version") not in (None, -1, 0):
        raise RegistryError(
            422,
            42205,
            "Registering with an explicit id or version is only allowed in IMPORT mode, which "
            "this registry does not support",
        )
    return body.get("schema"), body.get("schemaType")


def _subject(request: Request) -> str:
    return request.path_params["subject"]


Handler = Callable[[Request], Awaitable[Response]]


def _route(path: str, method: str, handler: Handler) -> Route:
    return Route(path, handler, methods=[method], name=f"{method} {path}")


# -- the app -------------------------------------------------------------------------------------


def create_app(store: KafkaStore) -> Starlette:
    """The registry's ASGI app, serving ``store`` (already started)."""

    async def root(request: Request) -> Response:
        return _reply(request, {})

    # -- subjects and versions ---------------------------------------------------------------

    async def list_subjects(request: Request) -> Response:
        names = store.subjects(
            deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deletedOnly") or _flag(request, "deleted_only"),
            prefix=request.query_params.get("subjectPrefix", ""),
        )
        return _reply(request, _page(request, names))

    async def list_versions(request: Request) -> Response:
        numbers = store.versions(
            _subject(request),
            deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deletedOnly") or _flag(request, "deleted_only"),
        )
        return _reply(request, _page(request, numbers))

    async def register(request: Request) -> Response:
        text, kind = _schema_request(await _body(request))
        schema_id, version = await run_in_threadpool(store.register, _subject(request), text, kind)
        return _reply(request, {"id": schema_id, "version": version})

    async def lookup(request: Request) -> Response:
        text, kind = _schema_request(await _body(request))
        found = await run_in_threadpool(
            store.lookup, _subject(request), text, kind, _flag(request, "deleted")
        )
        return _reply(request, found)

    async def get_version(request: Request) -> Response:
        number = _version(request.path_params["version"])
        found = store.get_version(_subject(request), number, _flag(request, "deleted"))
        return _reply(request, found)

    async def get_version_schema(request: Request) -> Response:
        number = _version(request.path_params["version"])
        found = store.get_version(_subject(request), number, _flag(request, "deleted"))
        # The schema itself, unescaped: it is JSON already.
        return Response(found["schema"], media_type=_media_type(request))

    async def delete_version(request: Request) -> Response:
        number = _version(request.path_params["version"])
        deleted = await run_in_threadpool(
            store.delete_version, _subject(request), number, _flag(request, "permanent")
        )
        return _reply(request, deleted)

    async def delete_subject(request: Request) -> Response:
        deleted = await run_in_threadpool(
            store.delete_subject, _subject(request), _flag(request, "permanent")
        )
        return _reply(request, deleted)

    # -- schemas by id -------------------------------------------------------------------------

    async def schema_by_id(request: Request) -> Response:
        # ?subject= and ?format= are accepted and ignored: ids are global and Avro has one form.
        return _reply(request, {"schema": store.schema_by_id(request.path_params["id"])})

    async def schema_by_id_raw(request: Request) -> Response:
        return Response(
            store.schema_by_id(request.path_params["id"]), media_type=_media_type(request)
        )

    async def schema_id_versions(request: Request) -> Response:
        found = store.id_versions(request.path_params["id"], _flag(request, "deleted"))
        return _reply(request, _page(request, found))

    async def schema_id_subjects(request: Request) -> Response:
        found = store.id_versions(request.path_params["id"], _flag(request, "deleted"))
        subjects = sorted({entry["subject"] for entry in found})
        return _reply(request, _page(request, subjects))

    async def schema_types(request: Request) -> Response:
        return _reply(request, list(SUPPORTED_TYPES))

    # -- configuration -----------------------------------------------------------------------

    def _level(body: dict) -> Level:
        # Confluent's request field is "compatibility"; "compatibilityLevel" (the GET field) is
        # accepted too, as Confluent's JSON mapping does.
        name = body.get("compatibility", body.get("compatibilityLevel"))
        try:
            if not isinstance(name, str):
                raise ValueError(name)
            return Level(name.strip().upper())
        except ValueError:
            raise RegistryError(
                422,
                42203,
                "Invalid compatibility level. Valid values are none, backward, forward, full, "
                "backward_transitive, forward_transitive, and full_transitive",
            ) from None

    async def get_global_config(request: Request) -> Response:
        return _reply(request, {"compatibilityLevel": str(store.get_config(None))})

    async def put_global_config(request: Request) -> Response:
        level = _level(await _body(request))
        await run_in_threadpool(store.set_config, None, level)
        return _reply(request, {"compatibility": str(level)})

    async def delete_global_config(request: Request) -> Response:
        previous = await run_in_threadpool(store.delete_config, None)
        return _reply(request, {"compatibilityLevel": str(previous)})

    async def get_subject_config(request: Request) -> Response:
        level = store.get_config(_subject(request), _flag(request, "defaultToGlobal"))
        return _reply(request, {"compatibilityLevel": str(level)})

    async def put_subject_config(request: Request) -> Response:
        level = _level(await _body(request))
        await run_in_threadpool(store.set_config, _subject(request), level)
        return _reply(request, {"compatibility": str(level)})

    async def delete_subject_config(request: Request) -> Response:
        previous = await run_in_threadpool(store.delete_config, _subject(request))
        return _reply(request, {"compatibilityLevel": str(previous)})

    async def get_mode(request: Request) -> Response:
        # Read-only view of Confluent's mode API: this registry is always READWRITE.
        return _reply(request, {"mode": "READWRITE"})

    # -- compatibility ---------------------------------------------------------------------------

    async def _compatibility(request: Request, number: int | None) -> Response:
        text, kind = _schema_request(await _body(request))
        verbose = _flag(request, "verbose")
        try:
            messages = await run_in_threadpool(store.check, _subject(request), text, kind, number)
        except RegistryError as exc:
            if exc.error_code != 42201 or not verbose:
                raise
            messages = [exc.message]  # as Confluent: verbose reports an invalid schema inline
        answer: dict[str, Any] = {"is_compatible": not messages}
        if verbose:
            answer["messages"] = messages
        return _reply(request, answer)

    async def compatibility_version(request: Request) -> Response:
        return await _compatibility(request, _version(request.path_params["version"]))

    async def compatibility_all(request: Request) -> Response:
        return await _compatibility(request, None)

    # -- errors ----------------------------------------------------------------------------------

    async def registry_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RegistryError)
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return _error(request, exc.status, exc.error_code, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # Jersey's wording for routing failures, e.g. "HTTP 404 Not Found".
        phrase = {404: "Not Found", 405: "Method Not Allowed"}.get(exc.status_code, exc.detail)
        return _error(request, exc.status_code, exc.status_code, f"HTTP {exc.status_code} {phrase}")

    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after answering, so the server logs the traceback.
        return _error(request, 500, 500, f"Internal Server Error: {type(exc).__name__}: {exc}")

    subject_path = "/subjects/{subject}"
    version_path = subject_path + "/versions/{version}"
    id_path = "/schemas/ids/{id:int}"
    routes = [
        _route("/", "GET", root),
        _route("/subjects", "GET", list_subjects),
        _route(subject_path, "POST", lookup),
        _route(subject_path, "DELETE", delete_subject),
        _route(subject_path + "/versions", "GET", list_versions),
        _route(subject_path + "/versions", "POST", register),
        _route(version_path, "GET", get_version),
        _route(version_path, "DELETE", delete_version),
        _route(version_path + "/schema", "GET", get_version_schema),
        _route(id_path, "GET", schema_by_id),
        _route(id_path + "/schema", "GET", schema_by_id_raw),
        _route(id_path + "/versions", "GET", schema_id_versions),
        _route(id_path + "/subjects", "GET", schema_id_subjects),
        _route("/schemas/types", "GET", schema_types),
        _route("/config", "GET", get_global_config),
        _route("/config", "PUT", put_global_config),
        _route("/config", "DELETE", delete_global_config),
        _route("/config/{subject}", "GET", get_subject_config),
        _route("/config/{subject}", "PUT", put_subject_config),
        _route("/config/{subject}", "DELETE", delete_subject_config),
        _route("/mode", "GET", get_mode),
        _route(
            "/compatibility/subjects/{subject}/versions/{version}", "POST", compatibility_version
        ),
        _route("/compatibility/subjects/{subject}/versions", "POST", compatibility_all),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            RegistryError: registry_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )
