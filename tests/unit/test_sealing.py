"""PII sealed in the profile sink's dead letters, opened again only by a replay with the secret."""

import json
import pickle

import pytest

from retail_backbone.io.sinks.base import SinkConfigError, SinkPolicy
from retail_backbone.io.sinks.bigtable import BigtableTarget
from retail_backbone.io.sinks.sealing import SEALED, FieldSealer, SealError
from retail_backbone.pipelines import personalization
from retail_backbone.testing import customer_profile

PII = {"customer_id": "C-000042", "email": "ada@example.com", "phone": "+44 20 7946 0000"}


def _profile():
    return customer_profile(
        customer_key="3f" * 16,
        address="1 Main Street, Springfield",
        segment="loyal",
        bought=["SKU-000002"],
        as_of_ms=1_764_115_200_000,
        version=1_764_111_114_563,
        revision=9 * 10**13,
        **PII,
    )


def test_sealed_fields_round_trip_and_nothing_else_changes():
    sealer = FieldSealer("a-test-secret", ("email", "phone", "address"))
    doc = {"email": "ada@example.com", "phone": None, "segment": "loyal"}
    sealed = sealer.seal(doc)
    assert set(sealed["email"]) == {SEALED} and "ada" not in json.dumps(sealed)
    assert sealed["phone"] is None and sealed["segment"] == "loyal"
    assert sealer.unseal(sealed) == doc


def test_a_wrong_secret_cannot_open_a_sealed_field():
    sealed = FieldSealer("a-test-secret", ("email",)).seal({"email": "ada@example.com"})
    with pytest.raises(SealError, match="email"):
        FieldSealer("another-secret", ("email",)).unseal(sealed)


def test_a_sealer_pickles_without_its_key_material():
    sealer = FieldSealer("env:SOME_VAR", ("email",))
    sealer._fernet = object()  # as after first use
    assert pickle.loads(pickle.dumps(sealer))._fernet is None


def test_profile_dead_letters_carry_no_pii_and_a_replay_restores_the_row(monkeypatch):
    monkeypatch.setenv("IT_SEAL_KEY", "profile-store-secret")
    opts = personalization.PersonalizationOptions(["--pii_hash_key=env:IT_SEAL_KEY"])
    spec = personalization.table_specs(opts)["profiles"]
    target = BigtableTarget("p", "i", spec)
    writer = target.writer(SinkPolicy())
    row = _profile()

    payload = writer.dead_letter_payload(row)

    for value in (*PII.values(), row.address):
        assert value.encode() not in payload
    assert json.loads(payload)["segment"] == "loyal"  # the rest stays readable for triage
    assert target.decode(payload) == row
    monkeypatch.setenv("IT_SEAL_KEY", "a-rotated-secret")
    with pytest.raises(SealError):
        BigtableTarget("p", "i", spec).decode(payload)


def test_sealed_fields_without_a_secret_reference_are_refused():
    with pytest.raises(SinkConfigError, match="seal_key"):
        personalization.PROFILES_BIGTABLE.sealer()
