#!/usr/bin/env python3
"""A small OTLP/HTTP trace receiver for the tests (what an OpenTelemetry Collector's otlphttp
receiver does, and nothing more): `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`,
decoded with the official `opentelemetry-proto` package; each span becomes one JSON line in
`--out`: trace_id, span_id, parent_span_id (hex), name, kind, service (`service.name`) and its
string and integer attributes. Answers an empty `ExportTraceServiceResponse`, as the protocol says.

    otlp-sink.py --port 4318 --out spans.jsonl
"""

import argparse
import gzip
import http.server
import json
import threading

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_BODY = 16 * 1024 * 1024
lock = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in ("string_value", "int_value", "bool_value", "double_value") else None


def spans(request):
    for rs in request.resource_spans:
        resource = {a.key: value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "kind": s.kind,
                    "service": resource.get("service.name"),
                    "attributes": {a.key: value(a.value) for a in s.attributes},
                }


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        if self.path != "/v1/traces" or not 0 < length <= MAX_BODY:
            self.send_error(404 if self.path != "/v1/traces" else 413)
            return
        body = self.rfile.read(length)
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:  # a body that is not the message: the protocol's 400
            self.send_error(400)
            return
        with lock, open(self.server.out, "a") as out:
            for span in spans(request):
                out.write(json.dumps(span) + "\n")
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.out = args.out
    print(f"otlp-sink listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
