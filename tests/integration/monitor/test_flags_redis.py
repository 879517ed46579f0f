"""The flag store on Redis: validation against known dictionaries, listing, deletion."""

from __future__ import annotations

import pytest
from monitor_workers import drain
from trace_events import publish, trace_event

from featurewatch.errors import FlagError
from featurewatch.services.monitor.dictionaries import DictionaryInfo, DictionaryRegistry
from featurewatch.services.monitor.flags import Flag, FlagStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(client):
    registry = DictionaryRegistry(client, [DictionaryInfo("d1", 100)])
    registry.publish()
    return FlagStore(client, registry)


def test_upsert_list_delete(store, client):
    flag, created = store.upsert(Flag("d1", 7, "DNA", "critical", 0.5))
    assert created and flag.severity == "critical"
    assert not store.upsert(Flag("d1", 7, "DNA v2", "info"))[1]
    store.upsert(Flag("d1", 3, "Other"))
    assert [(f.feature, f.name) for f in store.list()] == [(3, "Other"), (7, "DNA v2")]
    assert client.hget("featurewatch:{d1}:flag_min", "7") == b"0.0"
    assert store.delete("d1", 7) and not store.delete("d1", 7)
    assert [f.feature for f in store.list("d1")] == [3]
    assert client.hget("featurewatch:{d1}:flag_min", "7") is None


def test_unknown_dictionary_and_out_of_range_feature(store):
    with pytest.raises(FlagError, match=r"dictionary 'd9' is unknown \(known: \['d1'\]\)") as e:
        store.upsert(Flag("d9", 1, "x"))
    assert e.value.field == "dictionary" and not e.value.out_of_range
    with pytest.raises(FlagError, match=r"feature 100 is out of range: dictionary 'd1' has "
                                        r"d_sae=100 \(ids 0..99\)") as e:
        store.upsert(Flag("d1", 100, "x"))
    assert e.value.out_of_range


def test_d_sae_of_a_dictionary_without_bundle_comes_from_its_events(client, store,
                                                                     make_worker):
    with pytest.raises(FlagError, match="'d2' is unknown"):
        store.upsert(Flag("d2", 1, "x"))
    publish(client, [trace_event("e", {1: (1, 1.0)}, dictionary_id="d2", d_sae=50)],
            dictionary_id="d2")
    drain(make_worker(bundles=(), dictionary_id="d2"))
    assert store.upsert(Flag("d2", 49, "last"))[1]
    with pytest.raises(FlagError, match="d_sae=50"):
        store.upsert(Flag("d2", 50, "x"))


def test_load_file_validates_every_flag_before_writing(tmp_path, store):
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  - {dictionary: d1, feature: 1, name: ok}\n"
                    "  - {dictionary: d1, feature: 500, name: bad}\n")
    with pytest.raises(FlagError, match=r"flags\[1\]: feature 500 is out of range"):
        store.load_file(path)
    assert store.list() == []  # nothing half-loaded
