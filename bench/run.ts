// The benchmark: berth beside CNCF Distribution 2.8.2, in one run, over HTTPS on this machine.
//
//   npm run bench                 full run, writes bench/RESULTS.md
//   npm run bench -- --quick      a short smoke run (not written to RESULTS.md)
//
// Every response is checked (status; digests of pushed and pulled bytes). Targets (issue 2):
// push >= 1.0x Distribution, pull >= 0.95x, manifest GET and blob HEAD >= 2x requests/s with
// p99 no worse.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type Client, client, expectStatus } from './client.ts';
import { distributionVersion, startBerthTarget, startDistribution, type Target } from './targets.ts';

const { values: flags } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
const quick = flags.quick;
const MiB = 1024 * 1024;

interface Blob {
  readonly bytes: Buffer;
  readonly digest: string;
}

/** Distinct blobs (a counter up front) over one random buffer, digests computed before timing. */
function makeBlobs(size: number, count: number, seed: Buffer): Blob[] {
  return Array.from({ length: count }, (_, i) => {
    const bytes = Buffer.allocUnsafe(size);
    seed.copy(bytes, 0, 0, size);
    bytes.writeUInt32BE(i, 0);
    bytes.writeUInt32BE((Math.random() * 2 ** 32) >>> 0, 4);
    return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
  });
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight. */
async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

async function pushDockerStyle(c: Client, repo: string, b: Blob): Promise<void> {
  const post = await c.call('POST', `/v2/${repo}/blobs/uploads/`);
  expectStatus(post, 202, 'POST upload');
  const patch = await c.call('PATCH', String(post.headers.location), {
    body: b.bytes,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  expectStatus(patch, 202, 'PATCH');
  const loc = new URL(String(patch.headers.location), 'https://x');
  loc.searchParams.set('digest', b.digest);
  const put = await c.call('PUT', loc.pathname + loc.search);
  expectStatus(put, 201, 'PUT upload');
  if (put.headers['docker-content-digest'] !== b.digest) throw new Error('PUT: wrong Docker-Content-Digest');
}

async function pushChunked(c: Client, repo: string, b: Blob, chunk: number): Promise<void> {
  const post = await c.call('POST', `/v2/${repo}/blobs/uploads/`);
  expectStatus(post, 202, 'POST upload');
  let location = String(post.headers.location);
  for (let off = 0; off < b.bytes.length; off += chunk) {
    const part = b.bytes.subarray(off, Math.min(off + chunk, b.bytes.length));
    const patch = await c.call('PATCH', location, {
      body: part,
      headers: {
        'Content-Range': `${off}-${off + part.length - 1}`,
        'Content-Type': 'application/octet-stream',
      },
    });
    expectStatus(patch, 202, 'PATCH chunk');
    location = String(patch.headers.location);
  }
  const loc = new URL(location, 'https://x');
  loc.searchParams.set('digest', b.digest);
  expectStatus(await c.call('PUT', loc.pathname + loc.search), 201, 'PUT chunked');
}

async function pull(c: Client, repo: string, b: Blob): Promise<void> {
  const r = await c.call('GET', `/v2/${repo}/blobs/${b.digest}`, { hash: true });
  expectStatus(r, 200, 'GET blob');
  if (r.digest !== b.digest) throw new Error(`GET blob: body digest ${r.digest} != ${b.digest}`);
}

interface Throughput {
  readonly mbps: number;
  readonly seconds: number;
  readonly bytes: number;
}

async function timed(bytes: number, fn: () => Promise<void>): Promise<Throughput> {
  const t0 = performance.now();
  await fn();
  const seconds = (performance.now() - t0) / 1000;
  return { mbps: bytes / MiB / seconds, seconds, bytes };
}

interface Latency {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly requests: number;
}

/** Fires `fn` from `concurrency` loops for `seconds`, recording each request's latency. */
async function rate(seconds: number, concurrency: number, fn: () => Promise<void>): Promise<Latency> {
  const lat: number[] = [];
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const s = performance.now();
        await fn();
        lat.push(performance.now() - s);
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!;
  return { rps: lat.length / elapsed, p50: q(0.5), p99: q(0.99), requests: lat.length };
}

async function pushImage(c: Client, repo: string): Promise<{ layer: Blob; manifestDigest: string }> {
  const [config, layer] = makeBlobs(1024, 2, randomBytes(1024));
  // POST then PUT with the body: Distribution 2.8 does not take a monolithic POST ?digest=.
  for (const b of [config!, layer!]) {
    const post = await c.call('POST', `/v2/${repo}/blobs/uploads/`);
    expectStatus(post, 202, 'POST upload');
    const loc = new URL(String(post.headers.location), 'https://x');
    loc.searchParams.set('digest', b.digest);
    expectStatus(await c.call('PUT', loc.pathname + loc.search, { body: b.bytes }), 201, 'PUT upload');
  }
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config!.digest, size: 1024 },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer!.digest, size: 1024 },
      ],
    }),
  );
  const put = await c.call('PUT', `/v2/${repo}/manifests/latest`, {
    body: manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  expectStatus(put, 201, 'PUT manifest');
  return { layer: layer!, manifestDigest: `sha256:${createHash('sha256').update(manifest).digest('hex')}` };
}

interface Row {
  readonly case: string;
  readonly unit: string;
  readonly berth: number;
  readonly distribution: number;
  readonly target?: number;
  readonly extra?: string;
}

async function main() {
  const version = distributionVersion();
  const berth = await startBerthTarget();
  const dist = await startDistribution(
    join(berth.dataDir, 'tls', 'server.crt'),
    join(berth.dataDir, 'tls', 'server.key'),
    berth.caPath,
  ).catch(async (e: unknown) => {
    await berth.stop();
    throw e;
  });
  const targets: Target[] = [berth, dist];
  // Interrupted runs must not leave either server behind.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      void Promise.all(targets.map((t) => t.stop())).finally(() => process.exit(130));
    });
  }
  const rows: Row[] = [];
  const seed = randomBytes(16 * MiB);
  const budget = quick ? 32 * MiB : 256 * MiB; // bytes per push/pull case per target and repetition
  // Throughput cases run `reps` times, the targets' order alternating, and report the median:
  // on a shared 2-core machine one pass swings by 10-15% from run to run.
  const reps = quick ? 1 : 3;
  const order = (rep: number) => (rep % 2 === 0 ? targets : [...targets].reverse());
  let run = 0;
  try {
    for (const size of [1 * MiB, 16 * MiB]) {
      for (const conc of [4, 16]) {
        const count = Math.max(conc * 2, Math.floor(budget / size));
        const results: Record<string, { push: Throughput[]; pull: Throughput[] }> = {
          berth: { push: [], pull: [] },
          distribution: { push: [], pull: [] },
        };
        for (let rep = 0; rep < reps; rep++)
          for (const t of order(rep)) {
            const blobs = makeBlobs(size, count, seed);
            const c = client(t.base, t.caPath, conc);
            const repo = `bench/r${run++}`;
            await pool(Math.min(conc, count), conc, (i) => pushDockerStyle(c, `${repo}-warm`, blobs[i]!)); // warm-up
            const push = await timed(size * count, () =>
              pool(count, conc, (i) => pushDockerStyle(c, repo, blobs[i]!)),
            );
            await pool(Math.min(conc, count), conc, (i) => pull(c, repo, blobs[i]!)); // warm-up
            const pulled = await timed(size * count, () =>
              pool(count, conc, (i) => pull(c, repo, blobs[i]!)),
            );
            c.close();
            results[t.name]!.push.push(push);
            results[t.name]!.pull.push(pulled);
            log(
              `${t.name} ${size / MiB} MiB x${count} c=${conc}: push ${push.mbps.toFixed(0)} MB/s, pull ${pulled.mbps.toFixed(0)} MB/s`,
            );
          }
        const label = `${size / MiB} MiB blobs, concurrency ${conc}`;
        rows.push({
          case: `push, ${label}`,
          unit: 'MiB/s',
          berth: median(results.berth!.push),
          distribution: median(results.distribution!.push),
          target: 1.0,
        });
        rows.push({
          case: `pull, ${label}`,
          unit: 'MiB/s',
          berth: median(results.berth!.pull),
          distribution: median(results.distribution!.pull),
          target: 0.95,
        });
      }
    }

    {
      const size = 16 * MiB;
      const conc = 4;
      const count = Math.max(conc * 2, Math.floor(budget / 2 / size));
      const res: Record<string, Throughput[]> = { berth: [], distribution: [] };
      for (let rep = 0; rep < reps; rep++)
        for (const t of order(rep)) {
          const blobs = makeBlobs(size, count, seed);
          const c = client(t.base, t.caPath, conc);
          const repo = `bench/chunked${run++}`;
          const r = await timed(size * count, () =>
            pool(count, conc, (i) => pushChunked(c, repo, blobs[i]!, 4 * MiB)),
          );
          res[t.name]!.push(r);
          c.close();
          log(`${t.name} chunked push: ${r.mbps.toFixed(0)} MB/s`);
        }
      rows.push({
        case: 'chunked push, 16 MiB blobs in 4 MiB PATCHes, concurrency 4',
        unit: 'MiB/s',
        berth: median(res.berth!),
        distribution: median(res.distribution!),
        target: 1.0,
      });
    }

    const seconds = quick ? 2 : 8;
    const lat: Record<string, { manifest: Latency; head: Latency }> = {};
    for (const t of targets) {
      const c = client(t.base, t.caPath, 32);
      const { layer, manifestDigest } = await pushImage(c, 'bench/small');
      const getManifest = async () => {
        const r = await c.call('GET', '/v2/bench/small/manifests/latest', {
          headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' },
        });
        expectStatus(r, 200, 'GET manifest');
        if (r.headers['docker-content-digest'] !== manifestDigest)
          throw new Error('GET manifest: wrong digest');
      };
      const headBlob = async () => {
        const r = await c.call('HEAD', `/v2/bench/small/blobs/${layer.digest}`);
        expectStatus(r, 200, 'HEAD blob');
        if (r.headers['docker-content-digest'] !== layer.digest) throw new Error('HEAD blob: wrong digest');
      };
      await rate(1, 32, getManifest); // warm-up
      const manifest = await rate(seconds, 32, getManifest);
      await rate(1, 32, headBlob);
      const head = await rate(seconds, 32, headBlob);
      c.close();
      lat[t.name] = { manifest, head };
      log(
        `${t.name} manifest GET ${manifest.rps.toFixed(0)}/s p50 ${manifest.p50.toFixed(2)} p99 ${manifest.p99.toFixed(2)} ms; blob HEAD ${head.rps.toFixed(0)}/s p99 ${head.p99.toFixed(2)} ms`,
      );
    }
    for (const [key, label] of [
      ['manifest', 'manifest GET by tag, concurrency 32'],
      ['head', 'blob HEAD, concurrency 32'],
    ] as const) {
      const b = lat.berth![key];
      const d = lat.distribution![key];
      rows.push({
        case: label,
        unit: 'req/s',
        berth: b.rps,
        distribution: d.rps,
        target: 2.0,
        extra: `p50 ${b.p50.toFixed(2)} / ${d.p50.toFixed(2)} ms; p99 ${b.p99.toFixed(2)} / ${d.p99.toFixed(2)} ms (${b.p99 <= d.p99 ? 'p99 no worse' : 'p99 worse'})`,
      });
    }
  } finally {
    await Promise.all(targets.map((t) => t.stop()));
  }
  report(rows, version, reps);
}

function median(xs: Throughput[]): number {
  const v = xs.map((x) => x.mbps).sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)]!;
}

function log(s: string) {
  process.stderr.write(`${s}\n`);
}

function report(rows: Row[], version: string, reps: number) {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const lines = [
    '# Benchmark results',
    '',
    `Command: \`npm run bench${quick ? ' -- --quick' : ''}\` (bench/run.ts), ${new Date().toISOString()}.`,
    `Machine: ${cpus().length} cores (${cpu}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}; ${version}.`,
    'Both registries serve HTTPS on 127.0.0.1 with the same certificate, filesystem storage in a temp dir,',
    'access logs off; the client runs on the same cores. Every response is checked (status, digests).',
    `Throughput: median of ${reps} alternating repetitions per case; rates: one ${quick ? 2 : 8} s pass at concurrency 32.`,
    '',
    '| case | berth | Distribution | ratio | target | |',
    '| --- | ---: | ---: | ---: | ---: | --- |',
    ...rows.map((r) => {
      const ratio = r.berth / r.distribution;
      const ok = r.target === undefined ? '' : ratio >= r.target ? 'met' : 'missed';
      return `| ${r.case} | ${r.berth.toFixed(0)} ${r.unit} | ${r.distribution.toFixed(0)} ${r.unit} | ${ratio.toFixed(2)}x | ${r.target?.toFixed(2) ?? ''}x | ${ok}${r.extra ? `; ${r.extra}` : ''} |`;
    }),
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);
  const out = resolve(import.meta.dirname, 'out');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `results-${Date.now()}.json`), JSON.stringify(rows, null, 2));
  if (!quick) writeFileSync(resolve(import.meta.dirname, 'RESULTS.md'), text);
}

await main();
