// Evaluates a flagd flag-definition document with @openfeature/flagd-core (the
// evaluator of flagd's JavaScript in-process providers) for many contexts.
//
// Usage: node flagd_evaluate.cjs INPUT.json, where INPUT is
//   {"document": {...flagd flags...}, "flags": ["key", ...], "contexts": [{...}, ...]}
// Prints {"results": [[{"variant", "reason", "errorCode"} per flag] per context]}.
// NODE_MODULES names the folder the packages are installed in.
'use strict';

const fs = require('fs');
const modules = process.env.NODE_MODULES;
const load = (name) => require(require.resolve(name, { paths: [modules] }));
const { FlagdCore } = load('@openfeature/flagd-core');

const quiet = { error() {}, warn() {}, info() {}, debug() {} };
const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const core = new FlagdCore(undefined, quiet);
core.setConfigurations(JSON.stringify(input.document));

const results = input.contexts.map((context) =>
  input.flags.map((key) => {
    const r = core.resolveStringEvaluation(key, 'CODE_DEFAULT', context, quiet);
    return { variant: r.variant ?? null, reason: r.reason, errorCode: r.errorCode ?? null };
  }),
);
process.stdout.write(JSON.stringify({ results }));
