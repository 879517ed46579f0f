"""Names shared between the services through Redis: the only coupling besides protobuf.

Keys carry a Redis Cluster hash tag `{<dictionary_id>}` so that a dictionary's trace stream
and all of its aggregates live in one slot and can be updated by one atomic script.
"""

KEY_PREFIX = "featurewatch"


def trace_stream_key(dictionary_id: str) -> str:
    """The Redis Stream that carries `featurewatch.v1.TraceEvent` payloads for one dictionary."""
    return f"{KEY_PREFIX}:{{{dictionary_id}}}:traces"


def dictionary_key(dictionary_id: str, suffix: str) -> str:
    """Any other per-dictionary key, in the same hash slot as its trace stream."""
    return f"{KEY_PREFIX}:{{{dictionary_id}}}:{suffix}"


#: Field of each stream entry that holds the serialized TraceEvent.
TRACE_FIELD = b"event"
#: Set of dictionary ids that have ever published, so monitors can discover streams.
DICTIONARIES_KEY = f"{KEY_PREFIX}:dictionaries"
