// What the two unavoidable steps of an encrypted pull cost in Node on this machine, with nothing
// of berth around them (issue 3's pull target; see STORAGE-RESULTS.md):
//
//   1. writing a blob body over HTTPS: 256 KiB writes, each awaited, AES-128-GCM (the suite berth
//      negotiates), to a client in another process that hashes what it reads, as the storage
//      benchmark's client does;
//   2. opening AES-256-GCM segments of 256 KiB as berth stores them: a decipher per segment with
//      its AAD and tag, the plaintext freed at once.
//
//   npm run bench:floors            writes bench/FLOORS-RESULTS.md
//
// CPU per MiB is this process's user + system time (the client's is reported apart).
import { spawn } from 'node:child_process';
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadOrCreateTls } from '../src/tls.ts';

const MiB = 1024 * 1024;
const segment = 256 * 1024;
const reps = 5;

/** Server CPU ms per MiB for `total` bytes of body over HTTPS, and the client's. */
async function httpsWrite(total: number): Promise<{ server: number; client: number; mibps: number }> {
  const chunks = Array.from({ length: 4 }, () => randomBytes(segment));
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-floors-'));
  const { key, cert } = await loadOrCreateTls({ dataDir });
  rmSync(dataDir, { recursive: true, force: true });
  const server = createServer(
    { key, cert, ciphers: 'TLS_AES_128_GCM_SHA256', minVersion: 'TLSv1.3' },
    async (_req, res) => {
      res.writeHead(200, { 'content-length': String(total) });
      for (let sent = 0, i = 0; sent < total; sent += segment, i++)
        await new Promise<void>((ok, fail) => res.write(chunks[i % 4]!, (e) => (e ? fail(e) : ok())));
      res.end();
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  // One warm-up request, then one measured; the client prints its own CPU for the second.
  const clientCode = `
    const https = require('node:https'), { createHash } = require('node:crypto');
    const agent = new https.Agent({ keepAlive: true });
    const get = () => new Promise((ok) => https.get({ host: '127.0.0.1', port: ${port}, agent, rejectUnauthorized: false }, (r) => {
      const h = createHash('sha256'); r.on('data', (d) => h.update(d)); r.on('end', () => { h.digest(); ok(); });
    }));
    (async () => { await get(); const u0 = process.cpuUsage(); await get(); const u = process.cpuUsage(u0);
      process.stdout.write(String((u.user + u.system) / 1000)); agent.destroy(); })();`;
  const child = spawn(process.execPath, ['-e', clientCode], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  // The warm-up request is not counted: measure from the second connection's first request on.
  let served = 0;
  let u0 = process.cpuUsage();
  let t0 = performance.now();
  server.on('request', () => {
    if (++served === 2) {
      u0 = process.cpuUsage();
      t0 = performance.now();
    }
  });
  await new Promise((r) => child.on('exit', r));
  const u = process.cpuUsage(u0);
  const seconds = (performance.now() - t0) / 1000;
  server.close();
  const mib = total / MiB;
  return { server: (u.user + u.system) / 1000 / mib, client: Number(out) / mib, mibps: mib / seconds };
}

/** CPU ms per MiB to open `total` bytes of sealed 256 KiB segments. */
function decrypt(total: number): number {
  const dek = createSecretKey(randomBytes(32));
  const oid = randomBytes(16);
  const aad = (i: number) => Buffer.concat([oid, Buffer.from([0, 0, 0, 0, 0, 0, 0, i & 255, 0])]);
  const nonce = (i: number) => Buffer.concat([Buffer.alloc(8), Buffer.from([0, 0, 0, i & 255])]);
  const sealed = Array.from({ length: 4 }, (_, i) => {
    const c = createCipheriv('aes-256-gcm', dek, nonce(i));
    c.setAAD(aad(i));
    return { body: Buffer.concat([c.update(randomBytes(segment)), c.final()]), tag: c.getAuthTag() };
  });
  const open = (i: number) => {
    const s = sealed[i % 4]!;
    const d = createDecipheriv('aes-256-gcm', dek, nonce(i % 4));
    d.setAAD(aad(i % 4));
    d.setAuthTag(s.tag);
    const plain = d.update(s.body);
    d.final();
    plain.buffer.transfer(0); // as berth frees each segment's plaintext once it is sent
  };
  for (let i = 0; i < 64; i++) open(i);
  const u0 = process.cpuUsage();
  for (let i = 0; i < total / segment; i++) open(i);
  const u = process.cpuUsage(u0);
  return (u.user + u.system) / 1000 / (total / MiB);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const writes: { server: number; client: number; mibps: number }[] = [];
const opens: number[] = [];
for (let r = 0; r < reps; r++) {
  writes.push(await httpsWrite(512 * MiB));
  opens.push(decrypt(1024 * MiB));
  process.stderr.write(
    `rep ${r + 1}: HTTPS write ${writes[r]!.server.toFixed(2)} ms/MiB (client ${writes[r]!.client.toFixed(2)}, ${writes[r]!.mibps.toFixed(0)} MiB/s); AES-256-GCM open ${opens[r]!.toFixed(2)} ms/MiB\n`,
  );
}
const lines = [
  '# Floors of an encrypted pull in Node',
  '',
  `Command: \`npm run bench:floors\` (bench/floors.ts), ${new Date().toISOString()}.`,
  `Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}); Node ${process.version}, OpenSSL ${process.versions.openssl}.`,
  `${reps} repetitions, medians; CPU is user + system time per MiB.`,
  '',
  '| step | CPU ms per MiB | each repetition |',
  '| --- | ---: | --- |',
  `| HTTPS body write, 256 KiB writes awaited, AES-128-GCM, to a hashing client | ${median(writes.map((w) => w.server)).toFixed(2)} | ${writes.map((w) => w.server.toFixed(2)).join(', ')} |`,
  `| AES-256-GCM open of 256 KiB segments (decipher per segment, plaintext freed) | ${median(opens).toFixed(2)} | ${opens.map((o) => o.toFixed(2)).join(', ')} |`,
  `| sum | ${(median(writes.map((w) => w.server)) + median(opens)).toFixed(2)} | |`,
  '',
  `The hashing client used ${median(writes.map((w) => w.client)).toFixed(2)} ms/MiB at ${median(writes.map((w) => w.mibps)).toFixed(0)} MiB/s.`,
  '',
];
process.stdout.write(`${lines.join('\n')}\n`);
writeFileSync(resolve(import.meta.dirname, 'FLOORS-RESULTS.md'), lines.join('\n'));
