// The storage benchmark (issue 3): push and pull MB/s through berth on the filesystem in
// plaintext and encrypted, berth on Ceph RGW encrypted (and, for comparison, in plaintext), and
// CNCF Distribution 2.8.2 with its s3 driver on the same RGW, in one run, all over HTTPS on
// 127.0.0.1.
//
//   npm run bench:storage            writes bench/STORAGE-RESULTS.md
//   npm run bench:storage -- --quick a short smoke run (nothing written)
//
// Targets: encryption costs at most 15% of berth's own pull throughput on the filesystem; berth
// on RGW (encrypted) at least 1.0x Distribution on RGW (plaintext). Every pushed digest is
// checked by the server, every pulled body hashed by the client.
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { startBerth } from '../test/support/berth.ts';
import { startRgw } from '../test/support/rgw.ts';
import { type Client, type Credentials, client, expectStatus } from './client.ts';

const { values: flags } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, reps: { type: 'string', default: '3' } },
});
const MiB = 1024 * 1024;
const quick = flags.quick;
const reps = quick ? 1 : Math.max(1, Number(flags.reps));

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface Server {
  readonly label: string;
  readonly base: string;
  readonly caPath: string;
  /** berth runs with auth on (as by default): the client signs in as its admin with tokens. */
  readonly credentials?: Credentials;
  /** The server process, whose CPU time (all threads) each phase reports per MiB moved. */
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

/** CPU seconds (user + system, all threads) process pid has used so far. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
}

interface Sample {
  readonly push: number;
  readonly pull: number;
  /** Server CPU, ms per MiB moved. */
  readonly pushCpu: number;
  readonly pullCpu: number;
}

interface Blob {
  readonly bytes: Buffer;
  readonly digest: string;
}

function blobs(size: number, count: number): Blob[] {
  const seed = randomBytes(size);
  return Array.from({ length: count }, (_, i) => {
    const bytes = Buffer.from(seed);
    bytes.writeUInt32BE(i, 0);
    bytes.writeUInt32BE((Math.random() * 2 ** 32) >>> 0, 4);
    return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
  });
}

async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

/** docker's way: POST, one PATCH with the whole body, PUT ?digest=. */
async function push(c: Client, repo: string, b: Blob) {
  const post = await c.call('POST', `/v2/${repo}/blobs/uploads/`);
  expectStatus(post, 202, 'POST');
  const patch = await c.call('PATCH', String(post.headers.location), { body: b.bytes });
  expectStatus(patch, 202, 'PATCH');
  const loc = new URL(String(patch.headers.location), 'https://x');
  loc.searchParams.set('digest', b.digest);
  expectStatus(await c.call('PUT', loc.pathname + loc.search), 201, 'PUT');
}

async function pull(c: Client, repo: string, b: Blob) {
  const r = await c.call('GET', `/v2/${repo}/blobs/${b.digest}`, { hash: true });
  expectStatus(r, 200, 'GET');
  if (r.digest !== b.digest) throw new Error(`pulled ${r.digest}, pushed ${b.digest}`);
}

async function measure(s: Server, size: number, count: number, conc: number) {
  const c = client(s.base, s.caPath, conc, s.credentials);
  const data = blobs(size, count);
  const repo = `bench/${randomUUID().slice(0, 8)}`;
  await pool(conc, conc, (i) => push(c, `${repo}-warm`, data[i]!));
  await c.prepare(repo); // the token for the measured repository, outside the timing
  const mib = (size * count) / MiB;
  let t = performance.now();
  let cpu = cpuSeconds(s.pid);
  await pool(count, conc, (i) => push(c, repo, data[i]!));
  const pushMbps = mib / ((performance.now() - t) / 1000);
  const pushCpu = ((cpuSeconds(s.pid) - cpu) * 1000) / mib;
  t = performance.now();
  cpu = cpuSeconds(s.pid);
  await pool(count, conc, (i) => pull(c, repo, data[i]!));
  const pullMbps = mib / ((performance.now() - t) / 1000);
  const pullCpu = ((cpuSeconds(s.pid) - cpu) * 1000) / mib;
  c.close();
  return { push: pushMbps, pull: pullMbps, pushCpu, pullCpu };
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

async function startDistributionOnS3(
  rgw: { endpoint: string; accessKeyId: string; secretAccessKey: string },
  bucket: string,
  tls: { cert: string; key: string; ca: string },
): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-dist-s3-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    [
      'version: 0.1',
      'log: {level: error, accesslog: {disabled: true}}',
      'storage:',
      // Debian's packaged config.yml (and Distribution's own example) keep blob descriptors in
      // memory; berth likewise remembers blobs it linked. Both pull without stat round trips.
      '  cache: {blobdescriptor: inmemory}',
      '  s3:',
      `    accesskey: ${rgw.accessKeyId}`,
      `    secretkey: ${rgw.secretAccessKey}`,
      '    region: us-east-1',
      `    regionendpoint: ${rgw.endpoint}`,
      `    bucket: ${bucket}`,
      '    secure: false',
      '    v4auth: true',
      '    chunksize: 16777216',
      '  delete: {enabled: true}',
      '  redirect: {disable: true}',
      `http: {addr: "127.0.0.1:${port}", tls: {certificate: ${tls.cert}, key: ${tls.key}}}`,
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  delete env.AWS_CA_BUNDLE; // Distribution 2.8.2's s3 driver panics on start with it set
  const child: ChildProcess = spawn('docker-registry', ['serve', config], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const base = `https://127.0.0.1:${port}`;
  const ca = readFileSync(tls.ca);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited ${child.exitCode}:\n${out}`);
    const ok = await new Promise<boolean>((r) => {
      const req = request(`${base}/v2/`, { ca, agent: false }, (res) => {
        res.resume();
        r(res.statusCode === 200);
      });
      req.on('error', () => r(false));
      req.end();
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`docker-registry on s3 did not answer:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    label: 'Distribution 2.8.2, s3 driver on RGW, plaintext',
    pid: child.pid,
    base,
    caPath: tls.ca,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function main() {
  const size = 16 * MiB;
  const count = quick ? 8 : 32;
  const conc = 4;
  // Both servers on RGW keep every blob of every repetition (sealed blobs slightly larger), and
  // a nearly full OSD hangs writes instead of failing them.
  const stored = 2 * reps * (count + conc) * size;
  const rgw = await startRgw({
    memstoreBytes: Math.max(4 * 1024 ** 3, Math.ceil(stored * 1.25) + 2 * 1024 ** 3),
  });
  const stops: (() => Promise<void>)[] = [() => rgw.stop()];
  const rows: { label: string; push: number; pull: number; cpu: string; all: Sample[] }[] = [];
  try {
    const admin = new S3Client({
      endpoint: rgw.endpoint,
      region: rgw.region,
      forcePathStyle: true,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    for (const b of ['berth-bench', 'berth-bench-plain', 'dist-bench'])
      await admin.send(new CreateBucketCommand({ Bucket: b }));
    admin.destroy();

    const onRgw = (bucket: string) => ({
      BERTH_STORAGE_DRIVER: 's3',
      BERTH_STORAGE_S3_ENDPOINT: rgw.endpoint,
      BERTH_STORAGE_S3_BUCKET: bucket,
      BERTH_STORAGE_S3_ACCESS_KEY_ID: rgw.accessKeyId,
      BERTH_STORAGE_S3_SECRET_ACCESS_KEY: rgw.secretAccessKey,
    });
    const variants: [string, Record<string, string>][] = [
      ['berth, filesystem, plaintext', { BERTH_ENCRYPTION_ENABLED: 'false' }],
      ['berth, filesystem, encrypted', {}],
      ['berth, s3 driver on RGW, encrypted', onRgw('berth-bench')],
      // Not part of a target: like for like with Distribution, to tell what encryption costs
      // from what the rest of berth's path costs.
      [
        'berth, s3 driver on RGW, plaintext',
        { ...onRgw('berth-bench-plain'), BERTH_ENCRYPTION_ENABLED: 'false' },
      ],
    ];
    // Every server runs for the whole benchmark and each repetition measures all of them, in an
    // order that rotates, so a noisy moment on the shared cores does not land on one variant;
    // the table shows medians.
    const servers: Server[] = [];
    for (const [label, env] of variants) {
      const b = await startBerth({ env: { BERTH_LOG_LEVEL: 'warn', ...env } });
      stops.push(() => b.stop());
      servers.push({
        label,
        base: b.url,
        caPath: b.caPath,
        credentials: b.admin,
        pid: b.process.pid,
        stop: () => b.stop(),
      });
    }
    // The first berth's certificate also serves Distribution.
    const first = servers[0]!;
    const tlsDir = join(first.caPath, '..');
    const dist = await startDistributionOnS3(rgw, 'dist-bench', {
      cert: join(tlsDir, 'server.crt'),
      key: join(tlsDir, 'server.key'),
      ca: first.caPath,
    });
    stops.push(() => dist.stop());
    servers.push(dist);
    const samples = new Map<string, Sample[]>();
    for (let rep = 0; rep < reps; rep++) {
      for (let i = 0; i < servers.length; i++) {
        const s = servers[(i + rep) % servers.length]!;
        const m = await measure(s, size, count, conc);
        samples.set(s.label, [...(samples.get(s.label) ?? []), m]);
        process.stderr.write(
          `rep ${rep + 1}, ${s.label}: push ${m.push.toFixed(0)}, pull ${m.pull.toFixed(0)} MiB/s; ` +
            `server CPU ${m.pushCpu.toFixed(1)} / ${m.pullCpu.toFixed(1)} ms per MiB\n`,
        );
      }
    }
    for (const s of servers) {
      const ms = samples.get(s.label)!;
      rows.push({
        label: s.label,
        push: median(ms.map((m) => m.push)),
        pull: median(ms.map((m) => m.pull)),
        cpu: `${median(ms.map((m) => m.pushCpu)).toFixed(1)} / ${median(ms.map((m) => m.pullCpu)).toFixed(1)}`,
        all: ms,
      });
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
  }

  const [plain, enc, rgwEnc, rgwPlain, dist] = rows;
  /** Pull ratios of a to b within each repetition (both measured in the same one). */
  const pairs = (a: (typeof rows)[number], b: (typeof rows)[number]) =>
    a.all.map((m, i) => (m.pull / b.all[i]!.pull).toFixed(2)).join(', ');
  const encCost = 1 - enc!.pull / plain!.pull;
  const lines = [
    '# Storage benchmark results',
    '',
    `Command: \`npm run bench:storage${quick ? ' -- --quick' : ''}\` (bench/storage.ts), ${new Date().toISOString()}.`,
    `Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}.`,
    `${count} blobs of 16 MiB pushed (POST, PATCH, PUT) then pulled (hashed) at concurrency ${conc}, over HTTPS on 127.0.0.1;`,
    `${reps} repetition(s), every server measured in each, the order rotating; medians shown (all repetitions in the last column).`,
    'berth runs with auth on (the client signs in at /token and sends a Bearer token); Distribution has no auth,',
    "and its in-memory blob descriptor cache on, as in Debian's packaged config.",
    'RGW is a one-node Ceph cluster (memstore OSD) started by the harness on the same 2 cores.',
    "Server CPU is the server process's user + system time over the phase (all its threads, from /proc), medians.",
    '',
    '| variant | push MiB/s | pull MiB/s | server CPU ms per MiB, push / pull | push / pull MiB/s, each repetition |',
    '| --- | ---: | ---: | ---: | --- |',
    ...rows.map(
      (r) =>
        `| ${r.label} | ${r.push.toFixed(0)} | ${r.pull.toFixed(0)} | ${r.cpu} | ${r.all.map((m) => `${m.push.toFixed(0)} / ${m.pull.toFixed(0)}`).join(', ')} |`,
    ),
    '',
    `Encryption cost on berth's filesystem pull: ${(encCost * 100).toFixed(1)}% (target at most 15%: ${encCost <= 0.15 ? 'met' : 'missed'}).`,
    `berth on RGW (encrypted) vs Distribution on RGW: push ${(rgwEnc!.push / dist!.push).toFixed(2)}x, pull ${(rgwEnc!.pull / dist!.pull).toFixed(2)}x (target at least 1.0x: ${rgwEnc!.push >= dist!.push && rgwEnc!.pull >= dist!.pull ? 'met' : 'missed'}).`,
    `Pull, berth on RGW (encrypted) / Distribution within each repetition: ${pairs(rgwEnc!, dist!)}.`,
    `Like for like, berth on RGW (plaintext) vs Distribution: push ${(rgwPlain!.push / dist!.push).toFixed(2)}x, pull ${(rgwPlain!.pull / dist!.pull).toFixed(2)}x; pull within each repetition: ${pairs(rgwPlain!, dist!)}.`,
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (!quick) writeFileSync(resolve(import.meta.dirname, 'STORAGE-RESULTS.md'), lines.join('\n'));
}

await main();
