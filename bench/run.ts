// The benchmark: berth beside CNCF Distribution 2.8.2, in one run, over HTTPS on this machine,
// and what authorization costs berth.
//
//   npm run bench                                  full run; writes bench/RESULTS.md
//   npm run bench -- --quick                       short smoke run (RESULTS.md untouched)
//   npm run bench -- --only distribution           one registry only (no ratios)
//   npm run bench -- --only auth                   the auth case only (= --cases auth)
//   npm run bench -- --berth-url https://127.0.0.1:5000 --ca data/tls/ca.crt --credentials admin:PW
//                                                  bench a berth that is already running
//   more: --reps N (repetitions per case), --pull-rounds N (pull repetitions per case),
//         --seconds S (per requests/s measurement), --budget-mib M (bytes per throughput case),
//         --cases throughput,chunked,requests,auth (a subset),
//         --berth-env BERTH_KEY=VALUE (repeatable: config for the berth the harness starts, e.g.
//         --berth-env BERTH_ENCRYPTION_ENABLED=false)
//
// Cases: docker-style push and verified pull of 1 MiB and 16 MiB blobs at concurrency 4 and 16,
// chunked push, manifest GET by tag and blob HEAD at concurrency 32. Every response is checked
// (status; digests of pushed and pulled bytes). Targets (issue 2), as ratios berth/Distribution:
// push >= 1.0x, pull >= 0.95x, manifest GET and blob HEAD >= 2x requests/s with p99 no worse.
// berth runs with auth on, as by default: the client signs in as the bootstrap admin and sends
// Bearer tokens (client.ts); Distribution runs without auth, having no authorization model.
//
// The auth case (issue 4, point 9) starts two more berths of its own, one with auth on and one
// with auth off, holding the same image: tokens/s of GET /token with Basic credentials (a user's
// password and an access key of the same user, who has one small policy attached; scope
// repository:bench/x:pull,push) at concurrency 1 and 8, and manifest GET / blob HEAD at
// concurrency 16 with auth on (Bearer) beside auth off. Target: auth on within 10% (>= 0.90x).
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  basicAuthorization,
  type Client,
  type Credentials,
  client,
  expectStatus,
  parseChallenge,
} from './client.ts';
import { machine, markdown, type Row, sourceVersion, verdict } from './report.ts';
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
  smallImage,
  type Throughput,
  timed,
} from './workloads.ts';

const usage = `usage: node bench/run.ts [--quick] [--only berth|distribution|auth]
                         [--berth-url URL --ca FILE [--credentials USER:PASSWORD]]
                         [--reps N] [--pull-rounds N] [--seconds S] [--budget-mib M]
                         [--cases throughput,chunked,requests,auth] [--berth-env BERTH_KEY=VALUE ...]`;

const CASES = ['throughput', 'chunked', 'requests', 'auth'] as const;
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
      credentials: { type: 'string' },
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
  if (only !== undefined && only !== 'berth' && only !== 'distribution' && only !== 'auth')
    fail('--only takes berth, distribution or auth');
  if (only === 'auth' && values.cases !== undefined && values.cases !== 'auth')
    fail('--only auth is --cases auth: give one or the other');
  if (values['berth-url'] && !values.ca)
    fail('--berth-url needs --ca FILE (the CA that signed its certificate)');
  if (values['berth-url'] && only === 'distribution')
    fail('--berth-url makes no sense with --only distribution');
  // The auth case starts berths of its own (auth on and off), so it runs only where berth is
  // started by the harness; it is left out of the default set otherwise.
  const authPossible = !values['berth-url'] && only !== 'distribution';
  const cases = (
    only === 'auth'
      ? ['auth']
      : (values.cases?.split(',') ?? CASES.filter((c) => c !== 'auth' || authPossible))
  ) as Case[];
  for (const c of cases) if (!CASES.includes(c)) fail(`--cases takes a comma list of ${CASES.join(', ')}`);
  if (cases.includes('auth') && !authPossible)
    fail('the auth case starts its own berths: not with --berth-url or --only distribution');
  let credentials: Credentials | undefined;
  if (values.credentials !== undefined) {
    const colon = values.credentials.indexOf(':');
    if (colon < 1) fail('--credentials takes USER:PASSWORD');
    credentials = {
      username: values.credentials.slice(0, colon),
      password: values.credentials.slice(colon + 1),
    };
  } else if (values['berth-url'] && process.env.BERTH_ADMIN_PASSWORD) {
    credentials = { username: 'admin', password: process.env.BERTH_ADMIN_PASSWORD };
  }
  if (credentials && !values['berth-url'])
    fail('--credentials is for --berth-url (the harness signs in itself)');
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
    credentials,
    names: (only === 'berth' || only === 'distribution'
      ? [only]
      : only === 'auth'
        ? []
        : ['berth', 'distribution']) as TargetName[],
    berthUrl: values['berth-url'],
    ca: values.ca,
    // Every case runs `reps` times, the registries' order alternating, and reports the median:
    // one pass on a shared 2-core machine swings by 10-15% (more when others use the cores).
    reps: Math.floor(num(values.reps, quick ? 1 : 3, 'reps')),
    // The auth case compares two berths on short request loops, where one noisy second moves a
    // repetition by more than the 10% under test: more repetitions, for a steadier median.
    authReps: Math.floor(num(values.reps, quick ? 1 : 5, 'reps')),
    pullRounds: Math.floor(num(values['pull-rounds'], quick ? 1 : 5, 'pull-rounds')),
    seconds: num(values.seconds, quick ? 2 : 5, 'seconds'),
    budget: num(values['budget-mib'], quick ? 32 : 256, 'budget-mib') * MiB,
  };
}

const opts = options();
const log = (s: string) => process.stderr.write(`${s}\n`);
// As typed, but for the password of --credentials.
const args = process.argv
  .slice(2)
  .map((a, i, all) =>
    all[i - 1] === '--credentials'
      ? a.replace(/:.*/s, ':(redacted)')
      : a.replace(/^(--credentials=[^:]*):.*/s, '$1:(redacted)'),
  )
  .join(' ');
const command =
  process.env.npm_lifecycle_event === 'bench'
    ? `npm run bench${args ? ` -- ${args}` : ''}`
    : `node bench/run.ts${args ? ` ${args}` : ''}`;

const CHUNK = 5 * MiB; // chunked push: 16 MiB blobs go as 5 + 5 + 5 + 1 MiB
const RATE_CONCURRENCY = 32;
const AUTH_RATE_CONCURRENCY = 16;
const TOKEN_CONCURRENCIES = [1, 8];

async function startTargets(): Promise<Target[]> {
  const targets: Target[] = [];
  // Only the auth case asked for: it starts berths of its own.
  if (opts.cases.every((c) => c === 'auth')) return targets;
  try {
    if (opts.names.includes('berth')) {
      targets.push(
        opts.berthUrl
          ? await externalBerth(opts.berthUrl, opts.ca!, opts.credentials)
          : await startBerth(opts.berthEnv),
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

/** Measurements by case, then by side (a registry, or "auth on" / "auth off"). */
type Raw = Record<string, Record<string, (Throughput | Latency)[]>>;

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
  /** Paragraphs for the report under a group's heading. */
  readonly groupNotes: Record<string, string[]>;
  /** Notes for the report's header. */
  readonly notes: string[];
  readonly seed: Buffer;
  /** A fresh repository name: nothing of an earlier case or run is ever reused. */
  repo(): string;
  /** The targets in the order of repetition `rep`: alternating, so neither always goes first. */
  order(rep: number): readonly Target[];
  record(key: string, side: string, x: Throughput | Latency): void;
  /** A client for `t`, signed in as the harness's user when the target asks for credentials. */
  client(t: Target, sockets: number): Client;
}

function context(targets: readonly Target[]): Ctx {
  const runId = `bench-${Date.now().toString(36)}`;
  let seq = 0;
  const raw: Raw = {};
  return {
    targets,
    rows: [],
    raw,
    groupNotes: {},
    notes: [],
    seed: randomBytes(16 * MiB), // the random data every blob of the run is made of
    repo: () => `${runId}/r${seq++}`,
    order: (rep) => (rep % 2 === 0 ? targets : [...targets].reverse()),
    record(key, side, x) {
      raw[key] ??= {};
      raw[key][side] ??= [];
      raw[key][side].push(x);
    },
    client: (t, sockets) => client(t.base, t.caPath, sockets, t.credentials),
  };
}

function throughputRow(ctx: Ctx, group: string, label: string, key: string, target: number) {
  ctx.rows.push({
    group,
    case: label,
    unit: 'MiB/s',
    left: median(ctx.raw[key]?.berth as Throughput[] | undefined)?.mbps,
    right: median(ctx.raw[key]?.distribution as Throughput[] | undefined)?.mbps,
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
          const c = ctx.client(t, conc);
          const r = ctx.repo();
          // Warm-up on other blobs: sockets, TLS sessions, the server's JIT and directories; the
          // token for the measured repository is fetched here too, outside the timing.
          await pool(conc, conc, (i) => pushDockerStyle(c, `${r}-warm`, warmBlobs[i]!));
          await c.prepare(r);
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
      const clients = new Map(ctx.targets.map((t) => [t.name, ctx.client(t, conc)]));
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
          const c = ctx.client(t, conc);
          const r = ctx.repo();
          await pool(conc, conc, (i) => pushChunked(c, `${r}-warm`, warmBlobs[i]!, CHUNK));
          await c.prepare(r);
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
    const c = ctx.client(t, 1);
    images.set(t.name, await pushSmallImage(c, ctx.repo()));
    c.close();
  }
  for (const [label, make] of cases) {
    for (let rep = 0; rep < opts.reps; rep++)
      for (const t of ctx.order(rep)) {
        const c = ctx.client(t, RATE_CONCURRENCY);
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
      left: b?.rps,
      right: d?.rps,
      target: 2.0,
      p99NoWorse: true,
      latency: { left: b, right: d },
    });
  }
}

const TOKEN_GROUP =
  'Token issue (GET /token with Basic credentials, scope repository:bench/x:pull,push, grant checked)';
const HOT_GROUP = `Authorization on the hot path: requests/s at concurrency ${AUTH_RATE_CONCURRENCY}, berth with auth on (Bearer token) beside auth off`;
const BASIC_GROUP = `Basic credentials on every /v2 request (auth.basicOnRegistry, no token) at concurrency ${AUTH_RATE_CONCURRENCY}, for information`;

/** The user the auth case signs in as: one small policy, a password and an access key. */
const BENCH_POLICY = {
  Version: '2012-10-17',
  Statement: [
    {
      Sid: 'BenchPushPull',
      Effect: 'Allow',
      Action: ['registry:Pull', 'registry:Push'],
      Resource: 'repository/bench/*',
    },
  ],
};
const BENCH_REPO = 'bench/x';

async function adminCall(
  c: Client,
  basic: string,
  method: string,
  path: string,
  status: number,
  body?: unknown,
) {
  const r = await c.call(method, `/api/v1${path}`, {
    ...(body !== undefined && { body: Buffer.from(JSON.stringify(body)) }),
    headers: { Authorization: basic, ...(body !== undefined && { 'Content-Type': 'application/json' }) },
    keep: true,
  });
  if (r.status !== status)
    throw new Error(
      `${method} /api/v1${path}: expected ${status}, got ${r.status}: ${r.body?.toString('utf8')}`,
    );
  return r.body?.length ? (JSON.parse(r.body.toString('utf8')) as Record<string, unknown>) : {};
}

/** GET /token for BENCH_REPO with Basic `authorization`; checks that the token grants pull and push. */
function issueToken(c: Client, path: string, authorization: string) {
  return async () => {
    const r = await c.call('GET', path, { headers: { Authorization: authorization }, keep: true });
    expectStatus(r, 200, 'GET /token');
    const token = (JSON.parse(r.body!.toString('utf8')) as { token?: string }).token;
    const payload = token?.split('.')[1];
    if (!payload) throw new Error('GET /token: no token');
    const { access } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as {
      access?: { type: string; name: string; actions: string[] }[];
    };
    const e = access?.find((a) => a.type === 'repository' && a.name === BENCH_REPO);
    if (!e?.actions.includes('pull') || !e.actions.includes('push'))
      throw new Error(`GET /token: granted ${JSON.stringify(access)}, not pull,push on ${BENCH_REPO}`);
  };
}

const ms1 = (x: number) => `${x.toFixed(1)} ms`;

/**
 * Issue 4, point 9: tokens/s, and what authorization costs manifest GET and blob HEAD. Two berths
 * of the harness's own, started alike but for auth.enabled, hold the same image; the request
 * loops alternate between them repetition by repetition.
 */
async function authCases(ctx: Ctx) {
  const servers: Target[] = [];
  try {
    const on = await startBerth({ ...opts.berthEnv, BERTH_AUTH_ENABLED: 'true' });
    servers.push(on);
    const off = await startBerth({ ...opts.berthEnv, BERTH_AUTH_ENABLED: 'false' });
    servers.push(off);
    if (!on.authenticated || off.authenticated)
      throw new Error('auth case: expected one berth asking for credentials and one not');
    log(`berth, auth on: ${on.base} (pid ${on.pid}); berth, auth off: ${off.base} (pid ${off.pid})`);

    // The user, as an administrator would set one up through the admin API.
    const admin = client(on.base, on.caPath, 1);
    const adminBasic = basicAuthorization(on.credentials!);
    const password = `bench-${randomBytes(12).toString('hex')}`;
    await adminCall(admin, adminBasic, 'PUT', '/policies/bench-push-pull', 201, { document: BENCH_POLICY });
    await adminCall(admin, adminBasic, 'POST', '/users', 201, { name: 'bench-user', password });
    await adminCall(admin, adminBasic, 'PUT', '/users/bench-user/policies/bench-push-pull', 204);
    const key = await adminCall(admin, adminBasic, 'POST', '/users/bench-user/access-keys', 201);
    const challenge = parseChallenge((await admin.call('GET', '/v2/')).headers['www-authenticate']);
    admin.close();
    if (challenge?.kind !== 'bearer') throw new Error('auth case: GET /v2/ gave no Bearer challenge');
    const user: Credentials = { username: 'bench-user', password };
    const accessKey: Credentials = { username: String(key.id), password: String(key.secret) };

    // (a) Token issue, per credential and concurrency; verifications are cached by the server
    // (60 s), so after the first sign-in this is the steady state a busy CI sees. Measured before
    // anything else signs in as the user, so that the first sign-in is a full check.
    const realm = new URL(challenge.realm, on.base);
    if (challenge.service !== undefined) realm.searchParams.set('service', challenge.service);
    realm.searchParams.set('scope', `repository:${BENCH_REPO}:pull,push`);
    const tokenPath = realm.pathname + realm.search;
    const firsts: string[] = [];
    for (const [name, cred] of [
      ['user password', user],
      ['access key', accessKey],
    ] as const) {
      const c = client(on.base, on.caPath, Math.max(...TOKEN_CONCURRENCIES));
      const fn = issueToken(c, tokenPath, basicAuthorization(cred));
      await c.call('GET', '/v2/'); // a connection, so that the first sign-in times no TLS handshake
      const t0 = performance.now();
      await fn(); // the first sign-in with this credential: a full scrypt check (N=2^14, r=8)
      firsts.push(`${name} ${ms1(performance.now() - t0)}`);
      for (const conc of TOKEN_CONCURRENCIES) {
        const label = `${name}, concurrency ${conc}`;
        await rate(Math.min(1, opts.seconds), conc, fn); // warm-up
        for (let rep = 0; rep < opts.reps; rep++) {
          const l = await rate(opts.seconds, conc, fn);
          ctx.record(`token issue, ${label}`, 'berth', l);
          log(
            `berth auth on  GET /token ${label}: ${l.rps.toFixed(0)} tokens/s, p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms`,
          );
        }
        const med = median(ctx.raw[`token issue, ${label}`]?.berth as Latency[] | undefined);
        ctx.rows.push({
          group: TOKEN_GROUP,
          sides: ['berth, auth on'],
          case: label,
          unit: 'tokens/s',
          left: med?.rps,
          latency: { left: med },
        });
      }
      c.close();
    }
    ctx.groupNotes[TOKEN_GROUP] = [
      `The user \`bench-user\` has one policy attached (Allow registry:Pull and registry:Push on \`repository/bench/*\`); each answer's token is decoded and must grant pull and push on ${BENCH_REPO}. ` +
        'Password and access-key secrets are stored as scrypt hashes (N=2^14, r=8, p=1), and berth remembers a successful check for 60 s: ' +
        `the rows are that cached steady state (at most one full check per credential per minute). The first sign-in with each credential, uncached, took ${firsts.join(', ')} (one sample each). ` +
        `${opts.seconds} s per measurement after a 1 s warm-up, ${opts.reps} repetition(s), median shown. Every issue is audited (authn and token entries in the hash-chained audit log).`,
    ];

    // The same image in both, pushed by the user.
    const content = smallImage();
    const images = new Map<string, SmallImage>();
    for (const t of [on, off]) {
      const c = client(t.base, t.caPath, 1, user);
      images.set(t.base, await pushSmallImage(c, BENCH_REPO, content));
      c.close();
    }

    // (b) The hot path: the same reads with a Bearer token and with no auth at all, the order
    // alternating; then (for information) with Basic credentials on every request.
    const sides = [
      { side: 'auth on (Bearer)', t: on, cred: user, basicAlways: false },
      { side: 'auth off', t: off, cred: undefined, basicAlways: false },
      { side: 'auth on (Basic)', t: on, cred: user, basicAlways: true },
    ] as const;
    for (const [label, make] of [
      ['manifest GET by tag', getManifest],
      ['blob HEAD', headBlob],
    ] as const) {
      for (let rep = 0; rep < opts.authReps; rep++) {
        const [bearer, none, basic] = sides;
        for (const { side, t, cred, basicAlways } of [
          ...(rep % 2 === 0 ? [bearer, none] : [none, bearer]),
          basic,
        ]) {
          const c = client(t.base, t.caPath, AUTH_RATE_CONCURRENCY, cred, { basicAlways });
          const fn = make(c, images.get(t.base)!);
          await rate(Math.min(1, opts.seconds), AUTH_RATE_CONCURRENCY, fn); // warm-up; the token
          const l = await rate(opts.seconds, AUTH_RATE_CONCURRENCY, fn);
          c.close();
          ctx.record(`auth: ${label}`, side, l);
          log(
            `berth ${side.padEnd(17)} ${label} c=${AUTH_RATE_CONCURRENCY}: ${l.rps.toFixed(0)} req/s, p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms (${l.requests} requests, ${c.tokensFetched} token(s))`,
          );
        }
      }
      const [bearer, none, basic] = sides.map(({ side }) =>
        median(ctx.raw[`auth: ${label}`]?.[side] as Latency[] | undefined),
      );
      ctx.rows.push({
        group: HOT_GROUP,
        sides: ['auth on (Bearer)', 'auth off'],
        case: label,
        unit: 'req/s',
        left: bearer?.rps,
        right: none?.rps,
        target: 0.9,
        latency: { left: bearer, right: none },
      });
      ctx.rows.push({
        group: BASIC_GROUP,
        sides: ['auth on (Basic)', 'auth off'],
        case: label,
        unit: 'req/s',
        left: basic?.rps,
        right: none?.rps,
        latency: { left: basic, right: none },
      });
    }
    ctx.groupNotes[HOT_GROUP] = [
      `Two berths started by the harness alike (${
        opts.berthEnv && Object.keys(opts.berthEnv).length
          ? `${Object.entries(opts.berthEnv)
              .map(([k, v]) => `${k}=${v}`)
              .join(', ')}, `
          : ''
      }filesystem storage, encryption at rest as configured) except BERTH_AUTH_ENABLED=true / false, each holding the same image in ${BENCH_REPO}, pushed by \`bench-user\`. ` +
        `With auth on the client signs in as \`bench-user\` once (one token, scope repository:${BENCH_REPO}:pull,push, during the warm-up) and sends it as Bearer: berth authenticates the token (signature, expiry, audience) and checks its grant on every request. ` +
        `${opts.seconds} s per measurement after a 1 s warm-up, ${opts.authReps} repetitions, the order of the servers alternating; medians shown. Target (issue 4): auth on within 10% of auth off, i.e. ≥ 0.90x.`,
    ];
    ctx.groupNotes[BASIC_GROUP] = [
      "The same loops with `bench-user`'s password sent as Basic on every request, measured after the pair in each repetition: a cached password check, a policy decision and an audit entry per request. docker, podman and containerd use tokens; this is for clients that cannot.",
    ];
  } finally {
    await Promise.all(servers.map((t) => t.stop()));
  }
}

async function measure(ctx: Ctx): Promise<void> {
  const has = (c: Case) => opts.cases.includes(c);
  if (has('throughput') || has('chunked')) await blobCases(ctx, has('throughput'), has('chunked'));
  if (has('requests')) await requestCases(ctx);
  if (has('auth')) await authCases(ctx);
}

async function main(): Promise<void> {
  const version = distributionVersion();
  const source = sourceVersion(); // what the berths started below run
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
  const m = machine(version, source);
  const comparing = opts.cases.some((c) => c !== 'auth');
  const notes = [
    ...targets.map((t) =>
      t.name === 'berth'
        ? t.pid
          ? `berth: started by the harness (\`node src/cli.ts serve\`), filesystem storage in a temp dir, HTTPS with its own CA (RSA 2048 certificate); ${t.settings.join(', ')}.`
          : `berth: already running at ${t.base}, not started by the harness; ${t.settings.join(', ')}.`
        : `Distribution: started by the harness, filesystem storage in a temp dir, access log off, log level error, HTTPS with ${t.settings.join(', ')}; no auth.`,
    ),
    ...(comparing
      ? [
          'Both listen on 127.0.0.1; the client runs on the same cores as the servers, over keep-alive HTTPS connections (one per concurrent request).',
          ...(targets.some((t) => t.authenticated) && targets.some((t) => t.name === 'distribution')
            ? [
                "Auth: berth checks every request (token auth, as docker does it: the client signs in at /token with the admin's Basic credentials for `repository:<name>:pull,push`, one token per repository, fetched before each timed section, and sends it as Bearer; berth authenticates the token and checks its grant on every request). Distribution runs without auth: it has no authorization model (no users, tokens or policies), so berth does strictly more work per request in every comparison below.",
              ]
            : []),
          `Throughput: every push sends fresh random blobs (no deduplication); ${opts.budget / MiB} MiB (at least 2 blobs per connection) per case and registry; a warm-up on other blobs precedes each measurement.`,
          `Requests/s: ${opts.seconds} s per measurement after a 1 s warm-up, one small image (config, a 1 KiB layer, an OCI manifest).`,
          `Every case runs ${opts.reps} time(s) per registry (pulls ${opts.pullRounds} rounds over the last blobs pushed), the registries' order alternating; the tables show the median repetition (raw numbers in bench/out/).`,
        ]
      : []),
    ...ctx.notes,
  ];
  const { rows, raw } = ctx;
  const text = markdown(rows, m, command, notes, ctx.groupNotes);
  process.stdout.write(`\n${text}`);
  const outDir = resolve(import.meta.dirname, 'out');
  mkdirSync(outDir, { recursive: true });
  const json = join(outDir, `results-${m.date.replace(/[:.]/g, '-')}.json`);
  // The password of --credentials stays out of the file.
  const options = { ...opts, credentials: opts.credentials && { username: opts.credentials.username } };
  writeFileSync(json, JSON.stringify({ command, machine: m, options, rows, raw }, null, 2));
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
