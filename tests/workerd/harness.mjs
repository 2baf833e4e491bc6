// Starts the compiled edge Worker (edge-worker/build/) in workerd through miniflare's API, with
// the same Durable Object classes and SQLite storage as wrangler.toml declares.
import { Miniflare } from 'miniflare';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export async function startEdge(bindings = {}, options = {}) {
  const mf = new Miniflare({
    modules: true,
    scriptPath: path.join(ROOT, 'edge-worker/build/index.js'),
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'], fallthrough: true }],
    compatibilityDate: '2025-09-01',
    bindings: { CORE_URL: 'http://127.0.0.1:9', HEALTH_TIMEOUT_MS: '2000', ...bindings },
    durableObjects: {
      HEALTH_PROBE: { className: 'HealthProbe', useSQLite: true },
      INVENTORY: { className: 'InventoryObject', useSQLite: true },
    },
    ...options,
  });
  await mf.ready;
  return mf;
}

// A loopback HTTP server answering with `handler`; resolves to { url, close }.
export async function startPeer(handler) {
  const server = http.createServer(handler);
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    close: () => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(resolve); }),
  };
}

// The body the core answers on /healthz (shared_types::CoreHealth).
export function coreHealth(dbStatus = 'ok') {
  const database = dbStatus === 'ok'
    ? { tier: 'database', status: 'ok', latency_ms: 0.4, migration_version: 20261121000001 }
    : { tier: 'database', status: 'down', latency_ms: 1000, detail: 'connection failed: ConnectionRefused' };
  return { status: dbStatus === 'ok' ? 'ok' : 'down', version: '0.1.0', database };
}
