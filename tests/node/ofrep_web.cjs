// Drives a spangate through the OpenFeature web SDK and its OFREP provider, which
// fetches every flag at once from the bulk endpoint and polls it with If-None-Match.
//
// Usage: node ofrep_web.cjs BASE_URL CONTEXT_JSON FLAG:TYPE... where TYPE is boolean,
// string, number or object (NODE_MODULES names the
// folder the packages are installed in; OFREP_TOKEN, when set, is sent as a bearer
// token). Prints one JSON line when ready, with each flag's details, then one line
// per configuration change the provider reports, with the details again.
'use strict';

const modules = process.env.NODE_MODULES;
const load = (name) => require(require.resolve(name, { paths: [modules] }));
const { OpenFeature, ProviderEvents } = load('@openfeature/web-sdk');
const { OFREPWebProvider } = load('@openfeature/ofrep-web-provider');

const [baseUrl, contextJson, ...flags] = process.argv.slice(2);
const token = process.env.OFREP_TOKEN;

const defaults = { boolean: false, string: 'code-default', number: -1, object: { codeDefault: true } };
const getters = {
  boolean: 'getBooleanDetails',
  string: 'getStringDetails',
  number: 'getNumberDetails',
  object: 'getObjectDetails',
};

function details(client) {
  const out = {};
  for (const flag of flags) {
    const [key, type] = flag.split(':');
    const d = client[getters[type]](key, defaults[type]);
    out[key] = {
      value: d.value,
      variant: d.variant ?? null,
      reason: d.reason,
      errorCode: d.errorCode ?? null,
      metadata: d.flagMetadata,
    };
  }
  return out;
}

async function main() {
  const provider = new OFREPWebProvider({
    baseUrl,
    pollInterval: 200,
    headers: token ? [['Authorization', `Bearer ${token}`]] : [],
  });
  await OpenFeature.setContext(JSON.parse(contextJson));
  const client = OpenFeature.getClient();
  let changes = 0;
  client.addHandler(ProviderEvents.ConfigurationChanged, () => {
    changes += 1;
    console.log(JSON.stringify({ event: 'changed', changes, flags: details(client) }));
  });
  client.addHandler(ProviderEvents.Error, (e) => {
    console.log(JSON.stringify({ event: 'error', message: e?.message ?? null }));
  });
  try {
    await OpenFeature.setProviderAndWait(provider);
  } catch (e) {
    console.log(JSON.stringify({ event: 'failed', message: String(e?.message ?? e) }));
    process.exit(2);
  }
  console.log(JSON.stringify({ event: 'ready', flags: details(client) }));
}

main();
