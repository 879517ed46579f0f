"""gRPC MonitorService: run-time flag management and windowed firing queries.

Errors map in one place: a bad field → INVALID_ARGUMENT, a value beyond its range (feature
id >= d_sae, window longer than the retention, k > 1000) → OUT_OF_RANGE, Redis unreachable →
UNAVAILABLE.
"""

from __future__ import annotations

import functools
import logging

import grpc
from google.protobuf.duration_pb2 import Duration

from featurewatch.errors import FlagError, InvalidRequest
from featurewatch.services.monitor.aggregates import AggregateReader
from featurewatch.services.monitor.dictionaries import DictionaryRegistry
from featurewatch.services.monitor.flags import DEFAULT_SEVERITY, Flag, FlagStore
from featurewatch.services.monitor.ingest import REDIS_ERRORS
from featurewatch.v1 import monitor_pb2, monitor_pb2_grpc

log = logging.getLogger(__name__)
MAX_K = 1000
DEFAULT_K = 10
SEVERITY_NAMES = {monitor_pb2.SEVERITY_INFO: "info", monitor_pb2.SEVERITY_WARNING: "warning",
                  monitor_pb2.SEVERITY_CRITICAL: "critical"}
SEVERITY_ENUMS = {name: value for value, name in SEVERITY_NAMES.items()}


def flag_from_pb(msg: monitor_pb2.Flag) -> Flag:
    if msg.severity not in (monitor_pb2.SEVERITY_UNSPECIFIED, *SEVERITY_NAMES):
        raise FlagError(f"field 'severity'={msg.severity} is not a Severity value",
                        field="severity")
    return Flag(dictionary_id=msg.dictionary_id, feature=msg.feature, name=msg.name,
                severity=SEVERITY_NAMES.get(msg.severity, DEFAULT_SEVERITY),
                min_activation=msg.min_activation, runbook_url=msg.runbook_url)


def flag_to_pb(flag: Flag) -> monitor_pb2.Flag:
    return monitor_pb2.Flag(dictionary_id=flag.dictionary_id, feature=flag.feature,
                            name=flag.name, severity=SEVERITY_ENUMS[flag.severity],
                            min_activation=flag.min_activation, runbook_url=flag.runbook_url)


def _duration(seconds: int) -> Duration:
    return Duration(seconds=seconds)


def rpc(method):
    """Turn user errors into the matching status code; never INTERNAL for bad input."""

    @functools.wraps(method)
    def wrapper(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except (FlagError, InvalidRequest) as exc:
            code = (grpc.StatusCode.OUT_OF_RANGE if exc.out_of_range
                    else grpc.StatusCode.INVALID_ARGUMENT)
            context.abort(code, str(exc))
        except REDIS_ERRORS as exc:
            log.warning("%s: redis unavailable: %s", method.__name__, exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"redis unavailable: {exc}")

    return wrapper


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    """Answers from Redis, so every replica gives the same answers."""

    def __init__(self, flags: FlagStore, reader: AggregateReader,
                 registry: DictionaryRegistry, default_window_s: int) -> None:
        self.flags = flags
        self.reader = reader
        self.registry = registry
        self.default_window_s = default_window_s

    def _window(self, request) -> int:
        if not request.HasField("window"):
            return self.default_window_s
        window = request.window.seconds + request.window.nanos / 1e9
        return self.reader.layout.round_window(window)

    def _check_feature(self, dictionary_id: str, feature: int | None) -> None:
        d_sae = self.registry.d_sae(dictionary_id) if dictionary_id else None
        if d_sae is None:
            raise InvalidRequest("dictionary_id", f"{dictionary_id!r} is not a known dictionary "
                                 f"(known: {self.registry.ids()})")
        if feature is not None and feature >= d_sae:
            raise InvalidRequest("feature", f"{feature} is out of range for dictionary "
                                 f"{dictionary_id!r} (d_sae={d_sae})", out_of_range=True)

    @rpc
    def ListFlags(self, request, context):
        flags = self.flags.list(request.dictionary_id or None)
        return monitor_pb2.ListFlagsResponse(flags=[flag_to_pb(f) for f in flags])

    @rpc
    def UpsertFlag(self, request, context):
        if not request.HasField("flag"):
            raise InvalidRequest("flag", "is required")
        flag, created = self.flags.upsert(flag_from_pb(request.flag))
        return monitor_pb2.UpsertFlagResponse(flag=flag_to_pb(flag), created=created)

    @rpc
    def DeleteFlag(self, request, context):
        if not request.dictionary_id:
            raise InvalidRequest("dictionary_id", "is required")
        deleted = self.flags.delete(request.dictionary_id, request.feature)
        return monitor_pb2.DeleteFlagResponse(deleted=deleted)

    @rpc
    def GetFiringRate(self, request, context):
        self._check_feature(request.dictionary_id, request.feature)
        window = self._window(request)
        fires, tokens, rate = self.reader.firing_rate(request.dictionary_id, request.feature,
                                                      window)
        maximum = self.reader.max_activation(request.dictionary_id, [request.feature])
        return monitor_pb2.GetFiringRateResponse(
            fire_count=fires, token_count=tokens, firing_rate=rate,
            max_activation=maximum[request.feature], window=_duration(window))

    @rpc
    def TopFeatures(self, request, context):
        self._check_feature(request.dictionary_id, None)
        k = request.k or DEFAULT_K
        if k > MAX_K:
            raise InvalidRequest("k", f"{k} exceeds {MAX_K}", out_of_range=True)
        window = self._window(request)
        top, tokens = self.reader.top_features(request.dictionary_id, k, window)
        features = [monitor_pb2.FeatureFiring(feature=f, fire_count=c,
                                              firing_rate=c / tokens if tokens else 0.0)
                    for f, c in top]
        return monitor_pb2.TopFeaturesResponse(features=features, token_count=tokens,
                                               window=_duration(window))
