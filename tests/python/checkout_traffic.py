"""Simulated checkout traffic for one rollout, sent with the real third-party SDKs.

Every simulated request asks spangate for the `new-checkout` flag through the
OpenFeature SDK and its OFREP provider, then reports one span through the
OpenTelemetry SDK and its OTLP exporter (gRPC or HTTP), carrying the variant the
SDK returned. How many requests fail and how slow they are depends on the
scenario and on that variant. Spans get explicit start and end times, so the
latency is simulated without sleeping.

With `--flag-via attributes` (the default) the script puts the flag and variant on
the span as `feature_flag.*` attributes itself. With `--flag-via hook` it sets none:
the OpenFeature OpenTelemetry hook (openfeature-hooks-opentelemetry) adds a
`feature_flag.evaluation` event to the request's span, as the evaluation runs inside
it. Either way every request is a trace of its own, its span of kind SERVER.

Traffic goes in rounds until the done command (run between rounds) prints a
rollout whose `status.phase` is terminal, or until the deadline.

    python checkout_traffic.py SCENARIO EXPORTER OFREP_URL OTLP_URL [--flag-via hook] \
        -- DONE_COMMAND...

Exit status: 0 when the rollout reached a terminal phase, 1 at the deadline,
2 on bad arguments.
"""

import argparse
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass

from openfeature import api as openfeature
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

FLAG_KEY = "new-checkout"
SERVICE = "checkout"
REVISION = "3f2c1a9"
TERMINAL_PHASES = {"Promoted", "RolledBack", "Invalid"}


@dataclass(frozen=True)
class Profile:
    """How requests served one variant behave."""

    error_share: float
    latency_ms: tuple[float, float]


HEALTHY = Profile(error_share=0.01, latency_ms=(20.0, 120.0))
# The candidate of the healthy scenario never errs, so its error rate can never
# exceed the baseline's by chance, whatever the sample.
SCENARIOS = {
    "healthy": {"off": HEALTHY, "on": Profile(0.0, (20.0, 120.0))},
    "errors": {"off": HEALTHY, "on": Profile(0.30, (20.0, 120.0))},
    "latency": {"off": HEALTHY, "on": Profile(0.0, (500.0, 900.0))},
}


class CountingExporter(SpanExporter):
    """Wraps an exporter to count what it delivered: `force_flush()` says True
    even when the export failed, but `export()` reports the truth."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.delivered = 0
        self.failed = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.delivered += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def make_exporter(kind: str, endpoint: str) -> SpanExporter:
    if kind == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter,
    )

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)


def rollout_phase(command: list[str]) -> tuple[str | None, str]:
    """Runs the done command; returns the rollout's phase and a one-line summary."""
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"done command failed: {e}"
    if run.returncode != 0:
        return None, f"done command exited {run.returncode}: {run.stderr.strip()[-300:]}"
    try:
        status = json.loads(run.stdout).get("status") or {}
    except (json.JSONDecodeError, AttributeError) as e:
        return None, f"done command printed no rollout JSON: {e}"
    verdict = status.get("lastVerdict") or {}
    summary = (
        f"phase {status.get('phase')} step {status.get('currentStep')} "
        f"weight {status.get('weight')} verdict {verdict.get('outcome')}: "
        f"{verdict.get('message')}"
    )
    return status.get("phase"), summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("exporter", choices=["grpc", "http"])
    parser.add_argument("ofrep_url", help="OFREP base URL, e.g. http://127.0.0.1:8016")
    parser.add_argument("otlp_url", help="OTLP endpoint, e.g. http://127.0.0.1:4317")
    parser.add_argument(
        "--flag-via",
        choices=["attributes", "hook"],
        default="attributes",
        help="how spans name the variant: attributes set here, or the OpenTelemetry hook's events",
    )
    parser.add_argument("--deadline-seconds", type=float, default=120.0)
    parser.add_argument("--max-rounds", type=int, default=300)
    parser.add_argument("--users-per-round", type=int, default=400)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    # Split by hand: argparse would read the done command's own options as ours.
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the done command after --")
    cut = argv.index("--")
    args = parser.parse_args(argv[:cut])
    done_command = argv[cut + 1 :]

    profiles = SCENARIOS[args.scenario]
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.deadline_seconds

    exporter = CountingExporter(make_exporter(args.exporter, args.otlp_url))
    tracer_provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE, "vcs.ref.head.revision": REVISION})
    )
    tracer_provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=512, schedule_delay_millis=200)
    )
    tracer = tracer_provider.get_tracer("spangate-tests.checkout")

    provider = OFREPProvider(args.ofrep_url, timeout=5.0)
    openfeature.set_provider(provider)
    if args.flag_via == "hook":
        openfeature.add_hooks([TracingHook()])
    flags = openfeature.get_client()
    provider_name = provider.get_metadata().name

    user = 0
    summary = "no round ran"
    for round_no in range(1, args.max_rounds + 1):
        served = {"off": 0, "on": 0, "none": 0}
        errors = 0
        last_error = None
        for _ in range(args.users_per_round):
            context = EvaluationContext(
                targeting_key=f"user-{user}",
                attributes={"accountId": f"acct-{user % args.accounts}"},
            )
            user += 1
            if args.flag_via == "hook":
                # The hook records the evaluation on the current span, so the request's
                # span is open (and current) while the flag is evaluated. Its end is set
                # from the variant's simulated latency, which only the evaluation decides.
                start_ns = time.time_ns()
                span = tracer.start_span(
                    "POST /checkout",
                    kind=SpanKind.SERVER,
                    attributes={"http.request.method": "POST", "http.route": "/checkout"},
                    start_time=start_ns,
                )
                with trace.use_span(span, end_on_exit=False):
                    details = flags.get_boolean_details(FLAG_KEY, False, context)
            else:
                details = flags.get_boolean_details(FLAG_KEY, False, context)
            variant = details.variant if details.variant in profiles else None
            if variant is None:
                last_error = details.error_message or f"variant {details.variant!r}"
            served[variant or "none"] += 1
            profile = profiles[variant or "off"]
            failed = rng.random() < profile.error_share
            errors += failed
            latency_ns = int(rng.uniform(*profile.latency_ms) * 1_000_000)

            if args.flag_via == "hook":
                span.set_attribute("http.response.status_code", 500 if failed else 200)
                end_ns = start_ns + latency_ns
            else:
                attributes = {
                    "http.request.method": "POST",
                    "http.route": "/checkout",
                    "http.response.status_code": 500 if failed else 200,
                    "feature_flag.key": FLAG_KEY,
                    "feature_flag.provider.name": provider_name,
                }
                if variant is not None:
                    attributes["feature_flag.result.variant"] = variant
                end_ns = time.time_ns()
                span = tracer.start_span(
                    "POST /checkout",
                    kind=SpanKind.SERVER,
                    attributes=attributes,
                    start_time=end_ns - latency_ns,
                )
            if failed:
                span.set_status(Status(StatusCode.ERROR, "checkout failed"))
            span.end(end_time=end_ns)
        tracer_provider.force_flush()

        phase, summary = rollout_phase(done_command)
        print(
            f"round {round_no}: variants {served}, {errors} errors, "
            f"{exporter.delivered} spans delivered, {exporter.failed} failed; {summary}",
            flush=True,
        )
        if last_error is not None:
            print(f"  a flag evaluation failed: {last_error}", flush=True)
        if phase in TERMINAL_PHASES:
            tracer_provider.shutdown()
            return 0
        if time.monotonic() > deadline:
            break

    tracer_provider.shutdown()
    print(f"no terminal phase by the deadline or round limit; last: {summary}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
