// The benchmark: berth beside CNCF Distribution 2.8.2, in one run, over HTTPS on this machine.
//
//   npm run bench                                  full run; writes bench/RESULTS.md
//   npm run bench -- --quick                       short smoke run (RESULTS.md untouched)
//   npm run bench -- --only distribution           one registry only (no ratios)
//   npm run bench -- --berth-url https://127.0.0.1:5000 --ca data/tls/ca.crt
//                                                  bench a berth that is already running
//   more: --reps N (repetitions per case), --pull-rounds N (pull repetitions per case),
//         --seconds S (per requests/s measurement),
//         --budget-mib M (bytes per throughput case), --cases throughput,chunked,requests (a subset),
//         --berth-env BERTH_KEY=VALUE (repeatable: config for the berth the harness starts, e.g.
//         --berth-env BERTH_ENCRYPTION_ENABLED=false)
//
// Cases: docker-style push and verified pull of 1 MiB and 16 MiB blobs at concurrency 4 and 16,
// chunked push, manifest GET by tag and blob HEAD at concurrency 32. Every response is checked
// (status; digests of pushed and pulled bytes). Targets (issue 2), as ratios berth/Distribution:
// push >= 1.0x, pull >= 0.95x, manifest GET and blob HEAD >= 2x requests/s with p99 no worse.
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { client } from './client.ts';
import { machine, markdown, type Row, verdict } from './report.ts';
import {
  distributionVersion,
  externalBerth,
  startBerth,
  startDistribution,
  type Target,
  type TargetName,
} from './targets.ts';
import {
  blobSet,
  getManifest,
  headBlob,
  type Latency,
  MiB,
  pool,
  pull,
  pushChunked,
  pushDockerStyle,
  pushSmallImage,
  rate,
  type SmallImage,
  type Throughput,
  timed,
} from './workloads.ts';

const usage = `usage: node bench/run.ts [--quick] [--only berth|distribution] [--berth-url URL --ca FILE]
                         [--reps N] [--pull-rounds N] [--seconds S] [--budget-mib M] [--cases throughput,chunked,requests]
                         [--berth-env BERTH_KEY=VALUE ...]`;

const CASES = ['throughput', 'chunked', 'requests'] as const;
type Case = (typeof CASES)[number];

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      'berth-url': { type: 'string' },
      ca: { type: 'string' },
      reps: { type: 'string' },
      'pull-rounds': { type: 'string' },
      seconds: { type: 'string' },
      'budget-mib': { type: 'string' },
      cases: { type: 'string' },
      'berth-env': { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const fail = (m: string): never => {
    process.stderr.write(`bench: ${m}\n${usage}\n`);
    process.exit(2);
  };
  const num = (v: string | undefined, dflt: number, name: string) => {
    if (v === undefined) return dflt;
    const n = Number(v);
    return Number.isFinite(n) && n > 0 ? n : fail(`--${name} must be a positive number`);
  };
  const only = values.only;
  if (only !== undefined && only !== 'berth' && only !== 'distribution')
    fail('--only takes berth or distribution');
  if (values['berth-url'] && !values.ca)
    fail('--berth-url needs --ca FILE (the CA that signed its certificate)');
  if (values['berth-url'] && only === 'distribution')
    fail('--berth-url makes no sense with --only distribution');
  const cases = (values.cases ?? CASES.join(',')).split(',') as Case[];
  for (const c of cases) if (!CASES.includes(c)) fail(`--cases takes a comma list of ${CASES.join(', ')}`);
  const berthEnv: Record<string, string> = {};
  for (const kv of values['berth-env'] ?? []) {
    const m = /^(BERTH_\w+)=(.*)$/s.exec(kv);
    if (!m) fail(`--berth-env takes BERTH_NAME=value, not ${kv}`);
    else berthEnv[m[1]!] = m[2]!;
  }
  if (values['berth-url'] && Object.keys(berthEnv).length)
    fail('--berth-env needs a berth started by the harness');
  const quick = values.quick;
  return {
    berthEnv,
    cases,
    quick,
    names: (only ? [only] : ['berth', 'distribution']) as TargetName[],
    berthUrl: values['berth-url'],
    ca: values.ca,
    // Every case runs `reps` times, the registries' order alternating, and reports the median:
    // one pass on a shared 2-core machine swings by 10-15% (more when others use the cores).
    reps: Math.floor(num(values.reps, quick ? 1 : 3, 'reps')),
    pullRounds: Math.floor(num(values['pull-rounds'], quick ? 1 : 5, 'pull-rounds')),
    seconds: num(values.seconds, quick ? 2 : 5, 'seconds'),
    budget: num(values['budget-mib'], quick ? 32 : 256, 'budget-mib') * MiB,
  };
}

const opts = options();
const log = (s: string) => process.stderr.write(`${s}\n`);
const args = process.argv.slice(2).join(' ');
const command =
  process.env.npm_lifecycle_event === 'bench'
    ? `npm run bench${args ? ` -- ${args}` : ''}`
    : `node bench/run.ts${args ? ` ${args}` : ''}`;

const CHUNK = 5 * MiB; // chunked push: 16 MiB blobs go as 5 + 5 + 5 + 1 MiB
const RATE_CONCURRENCY = 32;

async function startTargets(): Promise<Target[]> {
  const targets: Target[] = [];
  try {
    if (opts.names.includes('berth')) {
      targets.push(
        opts.berthUrl ? await externalBerth(opts.berthUrl, opts.ca!) : await startBerth(opts.berthEnv),
      );
      log(
        `berth: ${targets[0]!.base}${targets[0]!.pid ? ` (pid ${targets[0]!.pid})` : ' (already running)'}`,
      );
    }
    if (opts.names.includes('distribution')) {
      // Same certificate as berth's when we have its files, so both do the same TLS work.
      const b = targets[0];
      const tls =
        b?.certFile && b.keyFile ? { certFile: b.certFile, keyFile: b.keyFile, caPath: b.caPath } : undefined;
      const d = await startDistribution(tls);
      targets.push(d);
      log(`distribution: ${d.base} (pid ${d.pid})`);
    }
    return targets;
  } catch (e) {
    await Promise.all(targets.map((t) => t.stop()));
    throw e;
  }
}

type Raw = Record<string, Partial<Record<TargetName, (Throughput | Latency)[]>>>;

/** The median repetition, by MiB/s or requests/s. */
function median<T extends Throughput | Latency>(xs: readonly T[] | undefined): T | undefined {
  if (!xs?.length) return undefined;
  const speed = (x: Throughput | Latency) => ('mbps' in x ? x.mbps : x.rps);
  return [...xs].sort((a, b) => speed(a) - speed(b))[Math.floor(xs.length / 2)];
}

interface Ctx {
  readonly targets: readonly Target[];
  readonly rows: Row[];
  readonly raw: Raw;
  readonly seed: Buffer;
  /** A fresh repository name: nothing of an earlier case or run is ever reused. */
  repo(): string;
  /** The targets in the order of repetition `rep`: alternating, so neither always goes first. */
  order(rep: number): readonly Target[];
  record(key: string, name: TargetName, x: Throughput | Latency): void;
}

function context(targets: readonly Target[]): Ctx {
  const runId = `bench-${Date.now().toString(36)}`;
  let seq = 0;
  const raw: Raw = {};
  return {
    targets,
    rows: [],
    raw,
    seed: randomBytes(16 * MiB), // the random data every blob of the run is made of
    repo: () => `${runId}/r${seq++}`,
    order: (rep) => (rep % 2 === 0 ? targets : [...targets].reverse()),
    record(key, name, x) {
      raw[key] ??= {};
      raw[key][name] ??= [];
      raw[key][name].push(x);
    },
  };
}

function throughputRow(ctx: Ctx, group: string, label: string, key: string, target: number) {
  ctx.rows.push({
    group,
    case: label,
    unit: 'MiB/s',
    berth: median(ctx.raw[key]?.berth as Throughput[] | undefined)?.mbps,
    distribution: median(ctx.raw[key]?.distribution as Throughput[] | undefined)?.mbps,
    target,
  });
}

const PUSH_GROUP = 'Push (docker-style: POST, PATCH whole body, PUT ?digest=)';
const PULL_GROUP = 'Pull (GET, body sha256 verified)';
const CHUNKED_GROUP = 'Chunked push (POST, PATCHes with Content-Range, PUT ?digest=)';

/** Push then pull of 1 MiB and 16 MiB blobs at concurrency 4 and 16; chunked push of 16 MiB blobs. */
async function blobCases(ctx: Ctx, withThroughput: boolean, withChunked: boolean) {
  const concurrencies = [4, 16];
  const countFor = (size: number, conc: number) => Math.max(conc * 2, Math.floor(opts.budget / size));
  for (const size of [1 * MiB, 16 * MiB]) {
    if (!withThroughput && size !== 16 * MiB) continue;
    const set = blobSet(size, Math.max(...concurrencies.map((c) => countFor(size, c))), ctx.seed);
    const warm = blobSet(size, Math.max(...concurrencies), ctx.seed);
    for (const conc of withThroughput ? concurrencies : []) {
      const count = countFor(size, conc);
      const label = `${size / MiB} MiB blobs, concurrency ${conc}`;
      const pushed = new Map<TargetName, { repo: string; digests: string[] }>();
      for (let rep = 0; rep < opts.reps; rep++)
        for (const t of ctx.order(rep)) {
          const blobs = set.refresh();
          const warmBlobs = warm.refresh();
          const c = client(t.base, t.caPath, conc);
          const r = ctx.repo();
          // Warm-up on other blobs: sockets, TLS sessions, the server's JIT and directories.
          await pool(conc, conc, (i) => pushDockerStyle(c, `${r}-warm`, warmBlobs[i]!));
          const res = await timed(size * count, () =>
            pool(count, conc, (i) => pushDockerStyle(c, r, blobs[i]!)),
          );
          c.close();
          pushed.set(t.name, { repo: r, digests: blobs.slice(0, count).map((b) => b.digest) });
          ctx.record(`push, ${label}`, t.name, res);
          log(`${t.name.padEnd(12)} push ${label} x${count}: ${res.mbps.toFixed(0)} MiB/s`);
        }
      throughputRow(ctx, PUSH_GROUP, label, `push, ${label}`, 1.0);
      // Pulls need no fresh data, so they are cheap to repeat: more rounds, alternating
      // registries round by round, against noise from whatever else shares the cores.
      const clients = new Map(ctx.targets.map((t) => [t.name, client(t.base, t.caPath, conc)]));
      for (const t of ctx.targets) {
        const { repo, digests } = pushed.get(t.name)!;
        await pool(conc, conc, (i) => pull(clients.get(t.name)!, repo, digests[i]!, size)); // warm-up
      }
      for (let round = 0; round < opts.pullRounds; round++)
        for (const t of ctx.order(round)) {
          const { repo, digests } = pushed.get(t.name)!;
          const c = clients.get(t.name)!;
          const res = await timed(size * count, () =>
            pool(count, conc, (i) => pull(c, repo, digests[i]!, size)),
          );
          ctx.record(`pull, ${label}`, t.name, res);
          log(`${t.name.padEnd(12)} pull ${label} x${count}: ${res.mbps.toFixed(0)} MiB/s`);
        }
      for (const c of clients.values()) c.close();
      throughputRow(ctx, PULL_GROUP, label, `pull, ${label}`, 0.95);
    }
    if (size === 16 * MiB && withChunked) {
      const conc = 4;
      const count = Math.max(conc * 2, Math.floor(opts.budget / 2 / size));
      const label = `16 MiB blobs in ${CHUNK / MiB} MiB PATCHes, concurrency ${conc}`;
      for (let rep = 0; rep < opts.reps; rep++)
        for (const t of ctx.order(rep)) {
          const blobs = set.refresh();
          const warmBlobs = warm.refresh();
          const c = client(t.base, t.caPath, conc);
          const r = ctx.repo();
          await pool(conc, conc, (i) => pushChunked(c, `${r}-warm`, warmBlobs[i]!, CHUNK));
          const res = await timed(size * count, () =>
            pool(count, conc, (i) => pushChunked(c, r, blobs[i]!, CHUNK)),
          );
          c.close();
          ctx.record(`chunked push, ${label}`, t.name, res);
          log(`${t.name.padEnd(12)} chunked push, ${label} x${count}: ${res.mbps.toFixed(0)} MiB/s`);
        }
      throughputRow(ctx, CHUNKED_GROUP, label, `chunked push, ${label}`, 1.0);
    }
  }
}

/**
 * Manifest GET by tag and blob HEAD of a small image, at concurrency 32 for `seconds` each,
 * `reps` times with the order alternating; the median repetition (by requests/s) is reported,
 * with its own p50 and p99.
 */
async function requestCases(ctx: Ctx) {
  const cases = [
    ['manifest GET by tag', getManifest],
    ['blob HEAD', headBlob],
  ] as const;
  const images = new Map<TargetName, SmallImage>();
  for (const t of ctx.targets) {
    const c = client(t.base, t.caPath, 1);
    images.set(t.name, await pushSmallImage(c, ctx.repo()));
    c.close();
  }
  for (const [label, make] of cases) {
    for (let rep = 0; rep < opts.reps; rep++)
      for (const t of ctx.order(rep)) {
        const c = client(t.base, t.caPath, RATE_CONCURRENCY);
        const fn = make(c, images.get(t.name)!);
        await rate(Math.min(1, opts.seconds), RATE_CONCURRENCY, fn); // warm-up: connections, JIT
        const l = await rate(opts.seconds, RATE_CONCURRENCY, fn);
        c.close();
        ctx.record(label, t.name, l);
        log(
          `${t.name.padEnd(12)} ${label} c=${RATE_CONCURRENCY}: ${l.rps.toFixed(0)} req/s, p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms (${l.requests} requests)`,
        );
      }
    const b = median(ctx.raw[label]?.berth as Latency[] | undefined);
    const d = median(ctx.raw[label]?.distribution as Latency[] | undefined);
    ctx.rows.push({
      group: `Requests/s at concurrency ${RATE_CONCURRENCY} (status and Docker-Content-Digest checked)`,
      case: label,
      unit: 'req/s',
      berth: b?.rps,
      distribution: d?.rps,
      target: 2.0,
      latency: { berth: b, distribution: d },
    });
  }
}

async function measure(ctx: Ctx): Promise<void> {
  const has = (c: Case) => opts.cases.includes(c);
  if (has('throughput') || has('chunked')) await blobCases(ctx, has('throughput'), has('chunked'));
  if (has('requests')) await requestCases(ctx);
}

async function main(): Promise<void> {
  const version = distributionVersion();
  const targets = await startTargets();
  // An interrupted run must not leave either server behind.
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      log(`bench: ${sig}, stopping the registries`);
      void Promise.all(targets.map((t) => t.stop())).finally(() => process.exit(130));
    });
  const ctx = context(targets);
  try {
    await measure(ctx);
  } finally {
    await Promise.all(targets.map((t) => t.stop()));
  }
  const m = machine(version);
  const notes = [
    ...targets.map((t) =>
      t.name === 'berth'
        ? t.pid
          ? `berth: started by the harness (\`node src/cli.ts serve\`), filesystem storage in a temp dir, HTTPS with its own CA (RSA 2048 certificate); ${t.settings.join(', ')}.`
          : `berth: already running at ${t.base}, not started by the harness.`
        : `Distribution: started by the harness, filesystem storage in a temp dir, access log off, log level error, HTTPS with ${t.settings.join(', ')}.`,
    ),
    'Both listen on 127.0.0.1; the client runs on the same cores as the servers, over keep-alive HTTPS connections (one per concurrent request).',
    `Throughput: every push sends fresh random blobs (no deduplication); ${opts.budget / MiB} MiB (at least 2 blobs per connection) per case and registry; a warm-up on other blobs precedes each measurement.`,
    `Requests/s: ${opts.seconds} s per measurement after a 1 s warm-up, one small image (config, a 1 KiB layer, an OCI manifest).`,
    `Every case runs ${opts.reps} time(s) per registry (pulls ${opts.pullRounds} rounds over the last blobs pushed), the registries' order alternating; the tables show the median repetition (raw numbers in bench/out/).`,
  ];
  const { rows, raw } = ctx;
  const text = markdown(rows, m, command, notes);
  process.stdout.write(`\n${text}`);
  const outDir = resolve(import.meta.dirname, 'out');
  mkdirSync(outDir, { recursive: true });
  const json = join(outDir, `results-${m.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(json, JSON.stringify({ command, machine: m, options: opts, rows, raw }, null, 2));
  log(`raw numbers: ${json}`);
  if (!opts.quick && targets.length === 2 && opts.cases.length === CASES.length) {
    writeFileSync(resolve(import.meta.dirname, 'RESULTS.md'), text);
    log('written: bench/RESULTS.md');
  } else {
    log('bench/RESULTS.md not written (only full runs of every case on both registries are recorded)');
  }
  const missed = rows.filter((r) => verdict(r) === false).map((r) => `${r.group.split(' (')[0]}: ${r.case}`);
  if (missed.length) log(`targets missed: ${missed.join('; ')}`);
}

await main();
