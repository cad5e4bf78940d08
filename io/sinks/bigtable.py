"""Versioned writes into Bigtable: every cell's timestamp is the row's version.

Example::

    from retail_backbone.io.sinks.bigtable import STOCK_LEVELS_BIGTABLE, WriteToBigtableVersioned

    failed = levels | "ServeStockLevels" >> WriteToBigtableVersioned(
        "my-project", "serving", STOCK_LEVELS_BIGTABLE, pipeline="inventory")
    # failed: PCollection[DeadLetter]; merge it into the pipeline's dead-letter sink.

Why replays and stale writes are harmless: each non-key field is one cell in the spec's column
family, written with ``timestamp = version (ms) * 1000`` (microseconds, millisecond granularity as
Bigtable requires). Reads return a column's cells newest timestamp first, so the latest cell is
always the one with the highest version, whatever order the writes arrived in: a replay
rewrites the very same cells (same column, same timestamp, same value), and an out-of-order
older write only adds a cell *behind* the newer one, which the column family's GC rule
(``MaxVersionsGCRule(max_versions)``, 1 by default; keep a few for a short history) removes.
Readers must ask for the latest cell (``CellsColumnLimitFilter(1)``, as ``read_latest`` does):
GC is lazy. Every field is written on every write, so the latest cells of a row always belong to
one version. Values are JSON (readable with ``cbt``; ``decode_cells`` reverses them); nothing is
ever incremented.

Stale counting: with ``count_stale=True`` (the default) each batch first reads the stored
version of its rows (one ``ReadRows`` of the batch's keys, latest cell of the version column),
skips the rows that are not newer and counts them as ``skipped_stale``. The check is an
optimization and a counter, not the guarantee: a writer racing in between is still resolved by
the timestamps. With ``count_stale=False`` writes are blind (one call per batch, no read) and
every row counts as ``written``, stale or not. Insert-if-absent tables
(``insert_if_absent=True``) use one ``CheckAndMutateRow`` per row (write only if the row has no
cell), which is atomic but costs one call per row: use it for low-volume append-only tables
such as alerts.

Row keys: the spec's key fields joined by ``#``, e.g. ``SKU-1#STORE-7`` for stock. The sku
leads because it has the highest cardinality: writes from every store spread over the whole
key space, and one sku's locations are contiguous (a single scan for "where is this in
stock"). Location first would put a big distribution centre's skus on one tablet. Avoid
hotspots in other key spaces the same way: never lead with a timestamp or another monotonically
increasing value (lead with the entity id, e.g. ``customer#reverse_ts``), and when no
high-cardinality field can lead, set ``salt_buckets=N``: keys get a ``crc32(key) % N`` prefix
(deterministic in every process, unlike ``hash()``), point reads compute the same prefix, and
scans fan out over the N prefixes. A key part that contains ``#`` is rejected (dead letter)
because it would make keys ambiguous.

Tables and column families are created at launch if missing (``ensure_bigtable_tables``, called
while the pipeline is built unless ``create_tables=False``). Against the emulator, set
``BIGTABLE_EMULATOR_HOST`` in the workers' environment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.transforms.display import DisplayDataItem

from retail_backbone.io.sinks.base import (
    BatchResult,
    BatchWriter,
    ErrorKind,
    SinkConfigError,
    SinkPolicy,
    SinkTarget,
    VersionedWriteFn,
    checked_version,
    decode_row,
    encode_row,
    field_of,
    json_value,
    row_fields,
)
from retail_backbone.io.sinks.rows import StockLevelRow
from retail_backbone.io.sinks.sealing import FieldSealer

__all__ = [
    "STOCK_LEVELS_BIGTABLE",
    "BigtableTableSpec",
    "BigtableTarget",
    "WriteToBigtableVersioned",
    "decode_cells",
    "ensure_bigtable_tables",
    "read_latest",
]

_LOG = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class BigtableTableSpec:
    """A versioned Bigtable table, declared once.

    Attributes:
        name: table id.
        family: the column family holding one column per non-key field.
        key: fields joined (in this order, by ``separator``) into the row key.
        version: the integer field that becomes every cell's timestamp (x 1000).
        tiebreak: an integer field that decides between two rows of one version (the higher
            wins; its cell is rewritten at the same timestamp). Needs the stored-version read,
            so writes with a tie-breaker always check (``count_stale`` is implied).
        max_versions: cells kept per column by the GC rule.
        salt_buckets: 0 for natural keys; N > 0 prefixes ``crc32(key) % N`` to spread writes.
        insert_if_absent: ``True`` for append-only tables: the first row per key stays.
        row_type: the NamedTuple rows are written as (for ``decode_cells`` and dead letters).
        separator: between key parts.
        sealed: fields (PII) that dead letters carry encrypted (``io/sinks/sealing.py``).
        seal_key: the secret reference (``env:VAR``) their key derives from; required with
            ``sealed`` by the writer and the replay target.
    """

    name: str
    family: str
    key: tuple[str, ...]
    version: str = "version"
    tiebreak: str | None = None
    max_versions: int = 1
    salt_buckets: int = 0
    insert_if_absent: bool = False
    row_type: type | None = None
    separator: str = "#"
    sealed: tuple[str, ...] = ()
    seal_key: str | None = None

    def __post_init__(self) -> None:
        if not (_NAME.match(self.name) and _NAME.match(self.family)) or not self.key:
            raise SinkConfigError(f"bigtable table {self.name!r}: bad name, family or key")
        if self.max_versions < 1 or self.salt_buckets < 0:
            raise SinkConfigError("max_versions must be >= 1 and salt_buckets >= 0")
        if self.row_type is not None:
            needed = (*self.key, self.version, *([self.tiebreak] if self.tiebreak else []))
            missing = set((*needed, *self.sealed)) - set(self.row_type._fields)
            if missing:
                raise SinkConfigError(f"row type {self.row_type.__name__} lacks {missing}")

    def renamed(self, name: str) -> BigtableTableSpec:
        return dataclasses.replace(self, name=name)

    def sealer(self) -> FieldSealer | None:
        """What seals ``sealed`` in dead letters (``None`` when nothing is sealed)."""
        if not self.sealed:
            return None
        if not self.seal_key:
            raise SinkConfigError(f"bigtable table {self.name}: sealed fields need a seal_key")
        return FieldSealer(self.seal_key, self.sealed)

    def natural_key(self, row: Any) -> str:
        parts = [str(field_of(row, k)) for k in self.key]
        for part in parts:
            if self.separator in part:
                raise ValueError(f"key part {part!r} contains the separator {self.separator!r}")
        return self.separator.join(parts)

    def row_key(self, row: Any) -> bytes:
        """The row key of ``row`` (a row or a mapping of the key fields)."""
        natural = self.natural_key(row)
        if self.salt_buckets:
            width = len(str(self.salt_buckets - 1))
            bucket = zlib.crc32(natural.encode()) % self.salt_buckets
            natural = f"{bucket:0{width}d}{self.separator}{natural}"
        return natural.encode()

    def key_fields(self, row_key: bytes) -> dict[str, str]:
        parts = row_key.decode().split(self.separator)
        if self.salt_buckets:
            parts = parts[1:]
        return dict(zip(self.key, parts, strict=True))


#: Current stock per sku and location, for point lookups by the serving layer.
STOCK_LEVELS_BIGTABLE = BigtableTableSpec(
    name="stock_levels",
    family="s",
    key=("sku", "location"),
    tiebreak="movements_applied",
    row_type=StockLevelRow,
)


# -- reading (for serving code and tests) ------------------------------------------------------


def decode_cells(spec: BigtableTableSpec, row_data: Any) -> Any:
    """A read row (``PartialRowData``) as the spec's ``row_type`` (or a dict), newest cells.

    Key fields come back from the row key as text (and are converted by the row type's
    annotations, e.g. dates).
    """
    doc: dict[str, Any] = dict(spec.key_fields(row_data.row_key))
    for qualifier, cells in row_data.cells.get(spec.family, {}).items():
        doc[qualifier.decode()] = json.loads(cells[0].value)  # newest timestamp first
    if spec.row_type is None:
        return doc
    return decode_row(spec.row_type, json.dumps(doc))


def read_latest(table: Any, spec: BigtableTableSpec, key_row: Any) -> Any | None:
    """The newest version of one row (``key_row`` has the key fields), or None if absent."""
    from google.cloud.bigtable.row_filters import CellsColumnLimitFilter

    data = table.read_row(spec.row_key(key_row), filter_=CellsColumnLimitFilter(1))
    return None if data is None else decode_cells(spec, data)


# -- launch-time DDL ---------------------------------------------------------------------------


def ensure_bigtable_tables(
    project_id: str, instance_id: str, specs: Iterable[BigtableTableSpec]
) -> list[str]:
    """Create missing tables and column families (with the spec's GC rule) at launch.

    Returns:
        What was done, one line per change.

    Raises:
        SinkConfigError: Bigtable refused or could not be reached.
    """
    from google.api_core import exceptions as gexc
    from google.cloud import bigtable
    from google.cloud.bigtable import column_family

    changes: list[str] = []
    client = bigtable.Client(project=project_id, admin=True)
    try:
        instance = client.instance(instance_id)
        for spec in specs:
            table = instance.table(spec.name)
            rule = column_family.MaxVersionsGCRule(spec.max_versions)
            if not table.exists():
                try:
                    table.create(column_families={spec.family: rule})
                    changes.append(f"created table {spec.name} with family {spec.family}")
                except gexc.AlreadyExists:
                    _LOG.info("bigtable sink: %s was created concurrently", spec.name)
            families = table.list_column_families()
            if spec.family not in families:
                table.column_family(spec.family, rule).create()
                changes.append(f"created column family {spec.name}:{spec.family}")
            elif families[spec.family].gc_rule != rule:
                table.column_family(spec.family, rule).update()
                changes.append(f"set GC rule of {spec.name}:{spec.family} to {spec.max_versions}")
    except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
        raise SinkConfigError(f"bigtable {instance_id}/{project_id}: {exc}") from exc
    finally:
        _close_client(client)
    for change in changes:
        _LOG.info("bigtable sink: %s", change)
    return changes


def _close_client(client: Any) -> None:
    # The client has no close(); its GAPIC clients are created lazily, so close only those
    # that exist instead of creating one through the public property just to close it.
    for attr in ("_table_data_client", "_table_admin_client", "_instance_admin_client"):
        gapic = getattr(client, attr, None)
        if gapic is not None:
            gapic.transport.close()


# -- the writer --------------------------------------------------------------------------------


def _transient_types() -> tuple[type[BaseException], ...]:
    from google.api_core import exceptions as gexc

    return (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.Aborted,
        gexc.InternalServerError,
        gexc.ResourceExhausted,
        gexc.Cancelled,
        gexc.Unknown,
        gexc.RetryError,
        ConnectionError,
    )


class _BigtableWriter(BatchWriter):
    store = "bigtable"

    def __init__(
        self,
        project_id: str,
        instance_id: str,
        spec: BigtableTableSpec,
        policy: SinkPolicy,
        count_stale: bool,
    ) -> None:
        self._project = project_id
        self._instance = instance_id
        self._spec = spec
        self._timeout = policy.call_timeout_s
        self._count_stale = count_stale
        self.insert_if_absent = spec.insert_if_absent
        self._sealer = spec.sealer()
        self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def target(self) -> str:
        return self._spec.name

    def dead_letter_payload(self, row: Any) -> bytes:
        if self._sealer is None:
            return super().dead_letter_payload(row)
        return encode_row(self._sealer.seal(row_fields(row)))

    def key(self, row: Any) -> tuple:
        return (self._spec.row_key(row),)

    def version(self, row: Any) -> int:
        return field_of(row, self._spec.version)

    def tiebreak(self, row: Any) -> int:
        return field_of(row, self._spec.tiebreak) if self._spec.tiebreak else 0

    def record_id(self, row: Any) -> str:
        return f"{self.target}/{self._spec.row_key(row).decode()}@{self.version(row)}"

    def open(self) -> None:
        from google.api_core.retry import Retry
        from google.cloud.bigtable import row_filters as rf

        self._transient = _transient_types()
        if self._sealer is not None:
            self._sealer.check()
        # Reads and writes make one attempt each: BatchGuard owns retries and backoff.
        self._no_retry = Retry(predicate=lambda _exc: False, timeout=self._timeout)
        family = rf.FamilyNameRegexFilter(re.escape(self._spec.family))
        version_columns = "|".join(
            re.escape(c) for c in (self._spec.version, self._spec.tiebreak) if c
        )
        self._version_filter = rf.RowFilterChain(
            [
                family,
                rf.ColumnQualifierRegexFilter(f"^({version_columns})$".encode()),
                rf.CellsColumnLimitFilter(1),
            ]
        )
        self._exists_filter = rf.RowFilterChain(
            [family, rf.CellsRowLimitFilter(1), rf.StripValueTransformerFilter(True)]
        )
        self._connect()

    def _connect(self) -> None:
        from google.cloud import bigtable

        self._client = bigtable.Client(project=self._project, admin=False)
        self._table = self._client.instance(self._instance).table(self._spec.name)
        self._data = self._client.table_data_client

    def _mutations(self, row: Any) -> list:
        from google.cloud.bigtable_v2.types import Mutation

        micros = checked_version(self.version(row)) * 1000
        family = self._spec.family
        return [
            Mutation(
                set_cell=Mutation.SetCell(
                    family_name=family,
                    column_qualifier=name.encode(),
                    timestamp_micros=micros,
                    value=json_value(value),
                )
            )
            for name, value in row_fields(row).items()
            if name not in self._spec.key
        ]

    def write(self, rows: Sequence[Any]) -> BatchResult:
        if self._client is None:
            self._connect()
        result = BatchResult()
        keys: dict[int, bytes] = {}
        mutations: dict[int, list] = {}
        for i, row in enumerate(rows):
            try:
                keys[i], mutations[i] = self._spec.row_key(row), self._mutations(row)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                result.rejected.append((i, exc))  # this row only: no need to bisect
        todo = list(mutations)
        if self.insert_if_absent:
            self._insert_absent(todo, keys, mutations, result)
            return result
        if (self._count_stale or self._spec.tiebreak) and todo:
            stored = self._stored_versions([keys[i] for i in todo])
            fresh = [i for i in todo if stored.get(keys[i], (-1, -1)) < self._rank(rows[i])]
            result.stale += len(todo) - len(fresh)
            todo = fresh
        if todo:
            self._mutate(todo, keys, mutations, result)
        return result

    def _rank(self, row: Any) -> tuple[int, int]:
        """What orders two rows of one key: (version, tie-breaker or 0)."""
        return (self.version(row), self.tiebreak(row))

    def _stored_versions(self, keys: list[bytes]) -> dict[bytes, tuple[int, int]]:
        from google.cloud.bigtable.row_set import RowSet

        row_set = RowSet()
        for key in keys:
            row_set.add_row_key(key)
        qualifier = self._spec.version.encode()
        stored = {}
        for data in self._table.read_rows(
            row_set=row_set, filter_=self._version_filter, retry=self._no_retry
        ):
            columns = data.cells.get(self._spec.family, {})
            cells = columns.get(qualifier)
            if cells:
                tiebreak = 0
                if self._spec.tiebreak and columns.get(self._spec.tiebreak.encode()):
                    tiebreak = json.loads(columns[self._spec.tiebreak.encode()][0].value)
                stored[data.row_key] = (cells[0].timestamp_micros // 1000, tiebreak)
        return stored

    def _mutate(self, todo: list[int], keys: dict, mutations: dict, result: BatchResult) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud.bigtable_v2.types import MutateRowsRequest

        entries = [MutateRowsRequest.Entry(row_key=keys[i], mutations=mutations[i]) for i in todo]
        statuses: dict[int, Any] = {}
        try:
            responses = self._data.mutate_rows(
                request={"table_name": self._table.name, "entries": entries},
                retry=None,
                timeout=self._timeout,
            )
            for response in responses:
                for entry in response.entries:
                    statuses[todo[entry.index]] = entry.status
        except gexc.GoogleAPICallError as exc:
            if not statuses:
                raise  # nothing happened: the whole batch is retried (or dead-lettered)
            result.retry_error = exc  # the stream broke: retry the rows without a status
        for i in todo:
            status = statuses.get(i)
            if status is None:
                result.retry.append(i)
            elif status.code == 0:
                result.written += 1
            else:
                error = _status_error(status.code, status.message)
                if isinstance(error, self._transient):
                    result.retry.append(i)
                    result.retry_error = error
                else:
                    result.rejected.append((i, error))

    def _insert_absent(
        self, todo: list[int], keys: dict, mutations: dict, result: BatchResult
    ) -> None:
        from google.api_core import exceptions as gexc

        for n, i in enumerate(todo):
            try:
                response = self._data.check_and_mutate_row(
                    request={
                        "table_name": self._table.name,
                        "row_key": keys[i],
                        "predicate_filter": self._exists_filter.to_pb(),
                        "false_mutations": mutations[i],  # applied only if the row has no cell
                    },
                    retry=None,
                    timeout=self._timeout,
                )
            except gexc.GoogleAPICallError as exc:
                if not isinstance(exc, self._transient):
                    result.rejected.append((i, exc))
                    continue
                if n == 0:
                    raise
                result.retry += todo[n:]
                result.retry_error = exc
                return
            if response.predicate_matched:
                result.stale += 1
            else:
                result.written += 1

    def classify(self, error: BaseException) -> ErrorKind:
        if isinstance(error, self._transient):
            return ErrorKind.TRANSIENT
        if isinstance(error, TypeError | ValueError | KeyError | AttributeError):
            return ErrorKind.ROW
        return ErrorKind.BATCH

    def reset(self) -> None:
        # A fresh channel: gRPC's reconnect backoff grows during an outage (up to minutes), and
        # the old channel would keep failing fast for a while after the service is back.
        if self._client is not None:
            _close_client(self._client)
            self._client = None

    def close(self) -> None:
        self.reset()

    def display_data(self) -> dict[str, Any]:
        return {
            "table": f"{self._project}/{self._instance}/{self._spec.name}",
            "family": self._spec.family,
            "mode": "insert_if_absent" if self._spec.insert_if_absent else "newest_version_wins",
        }


def _status_error(code: int, message: str) -> BaseException:
    import grpc
    from google.api_core import exceptions as gexc

    status = next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)
    return gexc.from_grpc_status(status, message or status.name)


class WriteToBigtableVersioned(beam.PTransform):
    """Write rows to Bigtable with cell timestamps = version; returns PCollection[DeadLetter].

    Args:
        project_id: GCP project (any name on the emulator).
        instance_id: Bigtable instance.
        table: the table's spec (row key, family, version field).
        pipeline: pipeline name for dead letters and the counters' namespace.
        policy: batching, retry and breaker settings.
        count_stale: read stored versions per batch to skip and count stale rows.
        create_tables: create the table / family at launch if missing.
        label: step label (also the dead letters' ``stage``).
    """

    def __init__(
        self,
        project_id: str,
        instance_id: str,
        table: BigtableTableSpec,
        *,
        pipeline: str,
        policy: SinkPolicy | None = None,
        count_stale: bool = True,
        create_tables: bool = True,
        label: str | None = None,
    ) -> None:
        super().__init__(label)
        self._project = project_id
        self._instance = instance_id
        self._table = table
        self._pipeline = pipeline
        self._policy = policy or SinkPolicy()
        self._count_stale = count_stale
        self._create_tables = create_tables

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        if self._create_tables:
            ensure_bigtable_tables(self._project, self._instance, [self._table])
        writer = _BigtableWriter(
            self._project, self._instance, self._table, self._policy, self._count_stale
        )
        return rows | "MutateVersioned" >> beam.ParDo(
            VersionedWriteFn(writer, self._policy, self._pipeline, self.label)
        )

    def display_data(self) -> dict[str, Any]:
        return {
            "table": DisplayDataItem(
                f"{self._project}/{self._instance}/{self._table.name}", label="Bigtable table"
            ),
            "family": DisplayDataItem(self._table.family, label="Column family"),
        }


@dataclasses.dataclass(frozen=True)
class BigtableTarget(SinkTarget):
    """A ``BigtableTableSpec`` table of ``project_id``/``instance_id``."""

    project_id: str
    instance_id: str
    spec: BigtableTableSpec
    count_stale: bool = True
    store = "bigtable"

    @property
    def name(self) -> str:
        return self.spec.name

    def decode(self, payload: bytes) -> Any:
        if self.spec.row_type is None:
            raise SinkConfigError(f"bigtable table {self.spec.name} has no row_type to decode into")
        sealer = self.spec.sealer()
        if sealer is not None:
            payload = encode_row(sealer.unseal(json.loads(payload)))
        return decode_row(self.spec.row_type, payload)

    def writer(self, policy: SinkPolicy) -> BatchWriter:
        return _BigtableWriter(
            self.project_id, self.instance_id, self.spec, policy, self.count_stale
        )

    def transform(self, pipeline: str, policy: SinkPolicy | None = None) -> beam.PTransform:
        return WriteToBigtableVersioned(
            self.project_id,
            self.instance_id,
            self.spec,
            pipeline=pipeline,
            policy=policy,
            count_stale=self.count_stale,
            create_tables=False,
        )

    def ensure(self) -> list[str]:
        return ensure_bigtable_tables(self.project_id, self.instance_id, [self.spec])
