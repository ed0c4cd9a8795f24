"""Flag evaluations recorded as OpenTelemetry log events, sent with the real SDK.

Emits COUNT `feature_flag.evaluation` events through the OpenTelemetry Python
logs SDK, each inside a span of its own so that it carries that span's trace and
span IDs, half named by the record's event_name and half by the older
`event.name` attribute; then one more outside any span (no trace ID). They are
exported with the OTLP log exporter, gRPC or HTTP, to spangate.

    python flag_evaluation_logs.py EXPORTER OTLP_URL COUNT

Exit status: 0 when every export succeeded, 1 when one failed, 2 on bad arguments.
"""

import argparse
import sys

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

FLAG_KEY = "new-checkout"
EVENT = "feature_flag.evaluation"


class Checked(LogRecordExporter):
    """Keeps the result of every export: the SDK only logs a failed one."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30_000):
        return self.inner.force_flush(timeout_millis)


def exporter(kind, url):
    if kind == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=url, insecure=True, timeout=10)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=f"{url}/v1/logs", timeout=10)


def attributes(variant, user):
    return {
        "feature_flag.key": FLAG_KEY,
        "feature_flag.result.variant": variant,
        "feature_flag.result.reason": "SPLIT",
        "feature_flag.context.id": user,
        "feature_flag.provider.name": "ofrep",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exporter", choices=["grpc", "http"])
    parser.add_argument("otlp_url")
    parser.add_argument("count", type=int)
    args = parser.parse_args()

    resource = Resource.create({"service.name": "checkout"})
    tracer = TracerProvider(resource=resource).get_tracer("checkout")
    checked = Checked(exporter(args.exporter, args.otlp_url))
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(checked))
    logger = provider.get_logger("openfeature")

    for i in range(args.count):
        variant = "on" if i % 2 else "off"
        with tracer.start_as_current_span("checkout"):
            if i % 2:
                logger.emit(
                    event_name=EVENT,
                    severity_number=SeverityNumber.INFO,
                    attributes=attributes(variant, f"user-{i}"),
                )
            else:
                logger.emit(
                    severity_number=SeverityNumber.INFO,
                    attributes={"event.name": EVENT, **attributes(variant, f"user-{i}")},
                )
    # Outside any span: an evaluation that no trace can be attributed to.
    logger.emit(event_name=EVENT, attributes=attributes("on", "user-outside"))
    provider.shutdown()

    failed = [r for r in checked.results if r != LogRecordExportResult.SUCCESS]
    print(f"{len(checked.results)} exports, {len(failed)} failed")
    return 1 if failed or not checked.results else 0


if __name__ == "__main__":
    sys.exit(main())
