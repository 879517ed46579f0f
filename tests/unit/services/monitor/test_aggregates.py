"""Bucket arithmetic and window sums (pure; the Redis side is in the integration tests)."""

from __future__ import annotations

import pytest

from featurewatch.errors import InvalidRequest
from featurewatch.services.monitor.aggregates import BucketLayout, WindowCounts, bucket_key

LAYOUT = BucketLayout(bucket_s=10, retention_s=60)


def test_index_and_window_cover_the_last_buckets():
    assert LAYOUT.index(1009.99) == 100
    assert LAYOUT.index(1010.0) == 101
    assert list(LAYOUT.window_indices(1045.0, 10)) == [104]
    assert list(LAYOUT.window_indices(1045.0, 25)) == [102, 103, 104]
    assert list(LAYOUT.window_indices(1045.0, 60)) == list(range(99, 105))


def test_window_rounds_up_and_is_bounded_by_retention():
    assert LAYOUT.round_window(1) == 10
    assert LAYOUT.round_window(60) == 60
    with pytest.raises(InvalidRequest, match="exceeds the retention of 60 s") as info:
        LAYOUT.round_window(61)
    assert info.value.out_of_range
    with pytest.raises(InvalidRequest, match="positive"):
        LAYOUT.round_window(0)


def test_ttl_counts_from_bucket_end_plus_retention():
    # bucket 100 spans [1000, 1010) and lives until 1070
    assert LAYOUT.ttl_ms(100, 1045.0) == 25_000
    assert LAYOUT.ttl_ms(100, 1070.0) == 0


def test_bucket_keys_share_the_dictionary_hash_tag():
    assert bucket_key("d1", 7) == "featurewatch:{d1}:bucket:7"


def test_window_counts_sum_buckets_and_rank_features():
    counts = WindowCounts(window_s=20)
    counts.add_bucket({b"3": b"5", b"7": b"2", b"_tokens": b"40", b"_events": b"2",
                       b"h:7": b"1", b"m:7": b"1.5"})
    counts.add_bucket({b"7": b"3", b"9": b"5", b"_tokens": b"10", b"_events": b"1",
                       b"m:7": b"0.5"})
    assert (counts.tokens, counts.events) == (50, 3)
    assert counts.fires == {3: 5, 7: 5, 9: 5}
    assert counts.rate(7) == pytest.approx(0.1)
    assert counts.rate(8) == 0.0
    assert counts.hits[7] == 1 and counts.flagged_max[7] == 1.5
    assert counts.top(2) == [(3, 5), (7, 5)]  # ties: smaller id first


def test_rate_of_an_empty_window_is_zero():
    assert WindowCounts(window_s=10).rate(1) == 0.0
