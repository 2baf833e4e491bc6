// Serves the built edge Worker from one workerd process through miniflare, without wrangler's
// proxy in front, for benchmarks that measure the Worker and its objects rather than the proxy.
//   node loadtest/workerd-server.mjs <port> <persist dir>     (keys from EDGE_SIGNING_KEY, CORE_VERIFYING_KEYS;
//   HOLD_RECORDS_RETENTION_SECONDS and HOLDS_PER_VISITOR_PER_MINUTE passed on when set)
// WORKERD_INSPECTOR_PORT=<port> opens workerd's V8 inspector on that loopback port, so that the
// soak's sampler can read each isolate's heap (`loadtest … --sample-inspector`).
import { startEdge } from '../tests/workerd/harness.mjs';

const [port, persist] = [Number(process.argv[2] ?? 18788), process.argv[3]];
const bindings = {
  EDGE_SIGNING_KEY: process.env.EDGE_SIGNING_KEY,
  CORE_VERIFYING_KEYS: process.env.CORE_VERIFYING_KEYS,
  CORE_URL: process.env.CORE_URL ?? 'http://127.0.0.1:8080',
};
// Test settings of the objects, passed on when set (the soak shortens the retention).
for (const name of ['HOLD_RECORDS_RETENTION_SECONDS', 'HOLDS_PER_VISITOR_PER_MINUTE']) {
  if (process.env[name]) bindings[name] = process.env[name];
}
const inspector = process.env.WORKERD_INSPECTOR_PORT ? { inspectorPort: Number(process.env.WORKERD_INSPECTOR_PORT) } : {};
const mf = await startEdge(bindings, {
  host: '127.0.0.1',
  port,
  ...(persist ? { durableObjectsPersist: persist } : {}),
  ...inspector,
});
console.log(`workerd serving the edge on http://127.0.0.1:${port}`);
const stop = async () => { await mf.dispose(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
