// A real SMTP server (nodemailer's smtp-server) that keeps every message it accepts as an .eml
// file, for tests and the local stack. Loopback only.
//
//   node scripts/smtp-sink.mjs --dir DIR [--port 1025] [--http 8025] [--fail 451] [--fail-first N]
//
//   --port      SMTP port (0: any free port). The first line on stdout is {"smtp": port, "http": port}.
//   --dir       where messages go: <n>-<message-id>.eml, written before the server answers 250.
//   --http      also serve the mailbox as a page (GET /) and as JSON (GET /messages).
//   --fail C    answer every message with SMTP code C (451: temporary, 550: permanent).
//   --fail-first N   fail only the first N messages (with --fail's code, 451 by default).
import { SMTPServer } from 'smtp-server';
import { createServer } from 'node:http';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const dir = args.dir || 'mail';
mkdirSync(dir, { recursive: true });
const failCode = args.fail ? Number(args.fail) : args['fail-first'] ? 451 : 0;
let failuresLeft = args['fail-first'] ? Number(args['fail-first']) : failCode ? Infinity : 0;
let received = readdirSync(dir).filter((f) => f.endsWith('.eml')).length;
let attempts = 0;

const server = new SMTPServer({
  authOptional: true,
  // No reverse DNS lookup of each client (up to 1.5 s each on a loaded machine).
  disableReverseLookup: true,
  disabledCommands: ['STARTTLS'],
  logger: false,
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      attempts += 1;
      if (failuresLeft > 0) {
        failuresLeft -= 1;
        const err = new Error(failCode >= 500 ? 'rejected by the test sink' : 'try again later (test sink)');
        err.responseCode = failCode;
        return callback(err);
      }
      const raw = Buffer.concat(chunks);
      const id = (/^message-id:\s*<([^>]+)>/im.exec(raw.toString('latin1')) || [, 'none'])[1].replace(/[^\w.@-]/g, '_');
      received += 1;
      writeFileSync(join(dir, `${String(received).padStart(6, '0')}-${id}.eml`), raw);
      callback(null, 'kept');
    });
  },
});

function messages() {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.eml'))
    .sort()
    .map((file) => {
      const head = readFileSync(join(dir, file), 'latin1').split(/\r?\n\r?\n/)[0];
      const field = (name) => (new RegExp(`^${name}:\\s*(.*)$`, 'im').exec(head) || [, ''])[1];
      return { file, to: field('to'), subject: field('subject'), date: field('date') };
    });
}

const escape = (s) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

server.listen(Number(args.port ?? 1025), '127.0.0.1', () => {
  const smtp = server.server.address().port;
  if (!args.http) {
    console.log(JSON.stringify({ smtp }));
    return;
  }
  const http = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/messages') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ attempts, messages: messages() }));
    }
    const file = url.pathname.slice(1);
    if (file.endsWith('.eml') && messages().some((m) => m.file === file)) {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      return res.end(readFileSync(join(dir, file)));
    }
    const rows = messages()
      .reverse()
      .map((m) => `<tr><td>${escape(m.date)}</td><td>${escape(m.to)}</td><td><a href="/${m.file}">${escape(m.subject)}</a></td></tr>`)
      .join('');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>Mail sink</title><h1>Mail sent by the local stack</h1><table>${rows}</table>`);
  });
  http.listen(Number(args.http), '127.0.0.1', () => {
    console.log(JSON.stringify({ smtp, http: http.address().port }));
  });
});

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
