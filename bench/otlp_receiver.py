"""B5's OTLP/HTTP receiver, a process of its own (``python -m bench.otlp_receiver --port N``), so
that decoding what COO's services export does not run inside the bench driver.

It accepts OTLP/HTTP protobuf on ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs``, decodes every
request with opentelemetry-proto (each span, log record and metric data point is walked, attributes
included), and answers ``GET /stats`` with what it received so far as JSON: requests, payload bytes,
spans, log records, log bytes and metric points."""

from __future__ import annotations

import argparse
import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fakes.otlp import any_value, attributes  # the tests' OTLP receiver: the same decoding


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, int] = {
            "requests": 0,
            "payload_bytes": 0,
            "spans": 0,
            "log_records": 0,
            "log_bytes": 0,
            "log_payload_bytes": 0,
            "metric_points": 0,
            "errors": 0,
        }

    def add(self, **amounts: int) -> None:
        with self.lock:
            for key, amount in amounts.items():
                self.data[key] = self.data.get(key, 0) + amount

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.data)


def _traces(body: bytes) -> tuple[bytes, dict[str, int]]:
    request = ExportTraceServiceRequest.FromString(body)
    spans = 0
    for rs in request.resource_spans:
        attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                attributes(span.attributes)
                for event in span.events:
                    attributes(event.attributes)
                spans += 1
    return ExportTraceServiceResponse().SerializeToString(), {"spans": spans}


def _logs(body: bytes) -> tuple[bytes, dict[str, int]]:
    request = ExportLogsServiceRequest.FromString(body)
    records = size = 0
    for rl in request.resource_logs:
        attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for record in sl.log_records:
                text = any_value(record.body)
                attributes(record.attributes)
                size += len(text.encode() if isinstance(text, str) else json.dumps(text, default=str).encode())
                records += 1
    reply = ExportLogsServiceResponse().SerializeToString()
    return reply, {"log_records": records, "log_bytes": size, "log_payload_bytes": len(body)}


def _metrics(body: bytes) -> tuple[bytes, dict[str, int]]:
    request = ExportMetricsServiceRequest.FromString(body)
    points = 0
    for rm in request.resource_metrics:
        attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    attributes(point.attributes)
                    points += 1
    return ExportMetricsServiceResponse().SerializeToString(), {"metric_points": points}


DECODERS = {"/v1/traces": _traces, "/v1/logs": _logs, "/v1/metrics": _metrics}


def make_server(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    counts = Counts()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != "/stats":
                self.send_error(404)
                return
            self._reply(200, "application/json", json.dumps(counts.snapshot()).encode())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            decode = DECODERS.get(self.path)
            if decode is None:
                self.send_error(404, "unknown OTLP path")
                return
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(415, "OTLP/HTTP protobuf only")
                return
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                reply, amounts = decode(body)
            except Exception as exc:  # a payload that does not decode is counted and refused
                counts.add(errors=1)
                self.send_error(400, f"cannot decode OTLP payload: {exc.__class__.__name__}")
                return
            counts.add(requests=1, payload_bytes=len(body), **amounts)
            self._reply(200, "application/x-protobuf", reply)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            del format, args

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp_receiver", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = make_server(args.port, args.host)
    print(f"otlp receiver on http://{args.host}:{args.port}", flush=True)  # noqa: T201
    server.serve_forever()


if __name__ == "__main__":
    main()
