// Simulated checkout traffic for one rollout, sent with the real JavaScript SDKs: the
// Node counterpart of tests/python/checkout_traffic.py --flag-via hook.
//
// Every simulated request is a SERVER span, current while the OpenFeature server SDK
// asks spangate for `new-checkout` through its OFREP provider. The span itself never
// names the flag: one of the hooks of @openfeature/open-telemetry-hooks records the
// evaluation, each in its own shape, and spangate must read that shape.
//
//   span-event  SpanEventHook: a `feature_flag.evaluation` event on the request's span
//               (the shape of the Python hook).
//   span        SpanHook: a child span named `feature_flag.evaluation` carrying the
//               `feature_flag.*` attributes; the request's span carries none.
//   event       EventHook: a `feature_flag.evaluation` log record (OTLP `event_name`)
//               through the OpenTelemetry Logs API, with the request's trace and span
//               IDs; the spans carry nothing.
//
// Spans and log records go over OTLP/HTTP (protobuf). How many requests fail and how
// slow they are depends on the scenario and on the variant; span times are set
// explicitly, so latency is simulated without sleeping. Traffic goes in rounds until
// the done command (run between rounds) prints a rollout whose `status.phase` is
// terminal, or until the deadline.
//
//   node checkout_traffic.cjs SCENARIO OFREP_URL OTLP_URL --hook SHAPE
//       [--deadline-seconds N] -- DONE_COMMAND...
//
// NODE_MODULES names the folder the packages are installed in. Exit status: 0 when
// the rollout reached a terminal phase, 1 at the deadline or when an export failed,
// 2 on bad arguments.
'use strict';

const { spawnSync } = require('node:child_process');

const modules = process.env.NODE_MODULES;
const load = (name) => require(require.resolve(name, { paths: [modules] }));
const otel = load('@opentelemetry/api');
const { logs } = load('@opentelemetry/api-logs');
const { AsyncLocalStorageContextManager } = load('@opentelemetry/context-async-hooks');
const { resourceFromAttributes } = load('@opentelemetry/resources');
const { BasicTracerProvider, BatchSpanProcessor } = load('@opentelemetry/sdk-trace-base');
const { LoggerProvider, BatchLogRecordProcessor } = load('@opentelemetry/sdk-logs');
const { OTLPTraceExporter } = load('@opentelemetry/exporter-trace-otlp-proto');
const { OTLPLogExporter } = load('@opentelemetry/exporter-logs-otlp-proto');
const { OpenFeature } = load('@openfeature/server-sdk');
const { OFREPProvider } = load('@openfeature/ofrep-provider');
const hooks = load('@openfeature/open-telemetry-hooks');

const FLAG_KEY = 'new-checkout';
const SERVICE = 'checkout';
const REVISION = '3f2c1a9';
const TERMINAL_PHASES = new Set(['Promoted', 'RolledBack', 'Invalid']);
const HOOKS = { 'span-event': 'SpanEventHook', span: 'SpanHook', event: 'EventHook' };

const HEALTHY = { errorShare: 0.01, latencyMs: [20, 120] };
// The candidate of the healthy scenario never errs, so its error rate cannot exceed
// the baseline's by chance, whatever the sample.
const SCENARIOS = {
  healthy: { off: HEALTHY, on: { errorShare: 0, latencyMs: [20, 120] } },
  errors: { off: HEALTHY, on: { errorShare: 0.3, latencyMs: [20, 120] } },
};

function usage(message) {
  console.error(`${message}\nusage: node checkout_traffic.cjs SCENARIO OFREP_URL OTLP_URL ` +
    `--hook ${Object.keys(HOOKS).join('|')} [--deadline-seconds N] -- DONE_COMMAND...`);
  process.exit(2);
}

function parseArgs(argv) {
  // Split by hand: the done command's own options are not ours.
  const cut = argv.indexOf('--');
  if (cut < 0 || cut === argv.length - 1) usage('give the done command after --');
  const ours = argv.slice(0, cut);
  const args = { deadlineSeconds: 120, maxRounds: 300, usersPerRound: 400, accounts: 200, seed: 7 };
  const positional = [];
  for (let i = 0; i < ours.length; i++) {
    const value = () => (i + 1 < ours.length ? ours[++i] : usage(`${ours[i]} needs a value`));
    switch (ours[i]) {
      case '--hook': args.hook = value(); break;
      case '--deadline-seconds': args.deadlineSeconds = Number(value()); break;
      case '--users-per-round': args.usersPerRound = Number(value()); break;
      default: positional.push(ours[i]);
    }
  }
  [args.scenario, args.ofrepUrl, args.otlpUrl] = positional;
  if (positional.length !== 3) usage('give SCENARIO, OFREP_URL and OTLP_URL');
  if (!(args.scenario in SCENARIOS)) usage(`unknown scenario ${args.scenario}`);
  if (!(args.hook in HOOKS)) usage(`unknown hook shape ${args.hook}`);
  args.doneCommand = argv.slice(cut + 1);
  return args;
}

// A small seeded generator, so a run's errors and latencies can be replayed.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Counts what an exporter delivered: forceFlush resolves even when an export failed,
// but the export's result code tells the truth.
function counting(exporter) {
  const counts = { delivered: 0, failed: 0, lastError: null };
  const inner = exporter.export.bind(exporter);
  exporter.export = (items, done) => inner(items, (result) => {
    if (result.code === 0) {
      counts.delivered += items.length;
    } else {
      counts.failed += items.length;
      counts.lastError = result.error ? String(result.error) : `code ${result.code}`;
    }
    done(result);
  });
  return counts;
}

function rolloutPhase(command) {
  const run = spawnSync(command[0], command.slice(1), { encoding: 'utf8', timeout: 30_000 });
  if (run.error) return [null, `done command failed: ${run.error.message}`];
  if (run.status !== 0) return [null, `done command exited ${run.status}: ${run.stderr.trim().slice(-300)}`];
  let status;
  try {
    status = JSON.parse(run.stdout).status || {};
  } catch (e) {
    return [null, `done command printed no rollout JSON: ${e.message}`];
  }
  const verdict = status.lastVerdict || {};
  return [status.phase, `phase ${status.phase} step ${status.currentStep} weight ${status.weight} ` +
    `verdict ${verdict.outcome}: ${verdict.message}`];
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const profiles = SCENARIOS[args.scenario];
  const random = mulberry32(args.seed);
  const deadline = Date.now() + args.deadlineSeconds * 1000;
  const otlp = args.otlpUrl.replace(/\/$/, '');

  // The hooks find the request's span through the active context, across the
  // provider's awaits: that takes the async-hooks context manager.
  otel.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const resource = resourceFromAttributes({ 'service.name': SERVICE, 'vcs.ref.head.revision': REVISION });
  const spanExporter = new OTLPTraceExporter({ url: `${otlp}/v1/traces`, timeoutMillis: 10_000 });
  const spans = counting(spanExporter);
  const tracerProvider = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(spanExporter, { maxExportBatchSize: 512, scheduledDelayMillis: 200 })],
  });
  // Global: SpanHook starts its span on the global tracer.
  otel.trace.setGlobalTracerProvider(tracerProvider);
  const logExporter = new OTLPLogExporter({ url: `${otlp}/v1/logs`, timeoutMillis: 10_000 });
  const records = counting(logExporter);
  const loggerProvider = new LoggerProvider({
    resource,
    processors: [new BatchLogRecordProcessor(logExporter, { maxExportBatchSize: 512, scheduledDelayMillis: 200 })],
  });
  // Global: EventHook emits through the Logs API's global logger provider.
  logs.setGlobalLoggerProvider(loggerProvider);
  const tracer = tracerProvider.getTracer('spangate-tests.checkout');

  await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl: args.ofrepUrl }));
  OpenFeature.addHooks(new hooks[HOOKS[args.hook]]());
  const flags = OpenFeature.getClient();

  const flushAll = () => Promise.all([tracerProvider.forceFlush(), loggerProvider.forceFlush()]);
  const shutdown = async () => {
    await Promise.all([tracerProvider.shutdown(), loggerProvider.shutdown()]);
    await OpenFeature.close();
  };

  let user = 0;
  let summary = 'no round ran';
  for (let round = 1; round <= args.maxRounds; round++) {
    const served = { off: 0, on: 0, none: 0 };
    let errors = 0;
    let lastError = null;
    for (let i = 0; i < args.usersPerRound; i++) {
      const context = { targetingKey: `user-${user}`, accountId: `acct-${user % args.accounts}` };
      user += 1;
      // The request's span is open and current while the flag is evaluated, so the
      // hook records on (or under) it. Its end follows from the variant's simulated
      // latency, which only the evaluation decides.
      const start = performance.timeOrigin + performance.now();
      const span = tracer.startSpan('POST /checkout', {
        kind: otel.SpanKind.SERVER,
        attributes: { 'http.request.method': 'POST', 'http.route': '/checkout' },
        startTime: start,
      });
      const details = await otel.context.with(otel.trace.setSpan(otel.context.active(), span), () =>
        flags.getBooleanDetails(FLAG_KEY, false, context));
      const variant = details.variant in profiles ? details.variant : null;
      if (variant === null) lastError = details.errorMessage || `variant ${details.variant}`;
      served[variant || 'none'] += 1;
      const profile = profiles[variant || 'off'];
      const failed = random() < profile.errorShare;
      errors += failed;
      const [low, high] = profile.latencyMs;
      span.setAttribute('http.response.status_code', failed ? 500 : 200);
      if (failed) span.setStatus({ code: otel.SpanStatusCode.ERROR, message: 'checkout failed' });
      span.end(start + low + random() * (high - low));
    }
    await flushAll();

    const [phase, said] = rolloutPhase(args.doneCommand);
    summary = said;
    console.log(`round ${round}: variants ${JSON.stringify(served)}, ${errors} errors, ` +
      `${spans.delivered} spans and ${records.delivered} log records delivered, ` +
      `${spans.failed + records.failed} failed; ${summary}`);
    if (lastError !== null) console.log(`  a flag evaluation failed: ${lastError}`);
    if (spans.failed + records.failed > 0) {
      await shutdown();
      console.error(`an export failed: ${spans.lastError || records.lastError}`);
      return 1;
    }
    if (TERMINAL_PHASES.has(phase)) {
      await shutdown();
      return 0;
    }
    if (Date.now() > deadline) break;
  }
  await shutdown();
  console.error(`no terminal phase by the deadline or round limit; last: ${summary}`);
  return 1;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
