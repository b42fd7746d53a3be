// The runner benchmark (issue 5, item 8): how long from a push's manifest commit to the first
// output of the container a push hook starts, with the image's layer already unpacked (warm) and
// with a layer never seen before (cold), with a 500 ms hook debounce window and with none (0, the default);
// and a bare `runc run` (and `crun run`) of the same busybox as the floor under it.
//
//   npm run bench:runner                    full run; writes bench/RUNNER-RESULTS.md
//   npm run bench:runner -- --quick         a short smoke run (nothing written)
//   more: --warm N, --cold N, --bare N (repetitions; default 10, 5, 10),
//         --runtime auto|runc|crun (berth's runner.runtime; default auto, as berth's own default)
//
// What one measurement is: the harness pushes a one-layer busybox image over HTTPS to a berth it
// started through its CLI (auth on, encryption at rest on: the defaults), layer and config first,
// then the manifest. t0 is the moment the manifest PUT answered 201: the commit, which berth
// answers only once the push is in the hooks' journal. A hook rule (`runTask` on the repository's
// tag) runs a task (networkMode none) whose container echoes a marker and exits. t1 is the time
// conmon stamped on that first log line (RFC3339Nano, read back through GET
// /api/v1/runner/clusters/default/tasks/{id}/logs once the task stopped): when the container's
// output reached its monitor, with no polling delay in it. Both clocks are this host's wall clock.
// The harness does not poll berth during the interval it measures (its first look is after the
// debounce window plus 700 ms), so the measurement is not slowed by its own requests.
//
// Warm: every repetition pushes a new config (a label and the marker differ), so a new manifest
// digest, over the same layer (same diffID), which berth unpacked during the warm-up. Cold: every
// repetition pushes a new layer (busybox plus a file of its own), so berth reads it from storage,
// decrypts, gunzips and unpacks it before the start. The bare baseline runs `runc run` on a bundle
// made by `runc spec` (its default namespaces, a new network namespace as networkMode none gets;
// process `busybox echo`, terminal off) over the same busybox in a plain directory: time from the
// spawn to the first stdout byte. Needs root, runc, conmon (scripts/setup-system.sh).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { Agent } from 'node:https';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import {
  DescribeTasksCommand,
  ECSClient,
  RegisterTaskDefinitionCommand,
  type Task,
} from '@aws-sdk/client-ecs';
import { basicAuthorization, type Client, client, expectStatus } from './client.ts';
import { sourceVersion } from './report.ts';
import { startBerth, type Target } from './targets.ts';

/** Issue 5, item 8: warm start (debounce 0) under this, from manifest commit to first output. */
export const WARM_START_TARGET_MS = 150;

const usage = `usage: node bench/runner.ts [--quick] [--warm N] [--cold N] [--bare N] [--runtime auto|runc|crun]`;

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      warm: { type: 'string' },
      cold: { type: 'string' },
      bare: { type: 'string' },
      runtime: { type: 'string', default: 'auto' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const fail = (m: string): never => {
    process.stderr.write(`bench:runner: ${m}\n${usage}\n`);
    process.exit(2);
  };
  const count = (v: string | undefined, dflt: number, name: string) => {
    if (v === undefined) return dflt;
    const n = Number(v);
    return Number.isInteger(n) && n > 0 ? n : fail(`--${name} must be a positive integer`);
  };
  if (!['auto', 'runc', 'crun'].includes(values.runtime)) fail('--runtime takes auto, runc or crun');
  const quick = values.quick;
  return {
    quick,
    warm: count(values.warm, quick ? 3 : 10, 'warm'),
    cold: count(values.cold, quick ? 2 : 5, 'cold'),
    bare: count(values.bare, quick ? 3 : 10, 'bare'),
    runtime: values.runtime,
  };
}

const opts = options();
const log = (s: string) => process.stderr.write(`${s}\n`);
const args = process.argv.slice(2).join(' ');
const command =
  process.env.npm_lifecycle_event === 'bench:runner'
    ? `npm run bench:runner${args ? ` -- ${args}` : ''}`
    : `node bench/runner.ts${args ? ` ${args}` : ''}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

// ---- the image ------------------------------------------------------------------------------

/** One ustar header + body (padded to 512) for a regular file or a directory. */
function tarEntry(name: string, mode: number, body?: Uint8Array): Buffer {
  const h = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string) => h.write(value, offset, length, 'ascii');
  const octal = (offset: number, length: number, n: number) =>
    field(offset, length, `${n.toString(8).padStart(length - 1, '0')}\0`);
  field(0, 100, name);
  octal(100, 8, mode);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, body?.length ?? 0);
  octal(136, 12, 1_700_000_000);
  field(148, 8, ' '.repeat(8));
  field(156, 1, body ? '0' : '5');
  field(257, 6, 'ustar\0');
  field(263, 2, '00');
  let sum = 0;
  for (const b of h) sum += b;
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  if (!body) return h;
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([h, body, pad]);
}

interface Layer {
  readonly bytes: Buffer;
  readonly digest: string;
  readonly diffId: string;
}

/** busybox at /bin/busybox and a file naming the layer, so every `id` is a layer of its own. */
function layer(busybox: Buffer, id: string): Layer {
  const tar = Buffer.concat([
    tarEntry('bin/', 0o755),
    tarEntry('bin/busybox', 0o755, busybox),
    tarEntry('etc/', 0o755),
    tarEntry('etc/bench-layer', 0o644, Buffer.from(`${id}\n`)),
    Buffer.alloc(1024), // the end-of-archive marker
  ]);
  const bytes = gzipSync(tar, { level: 6 });
  return { bytes, digest: sha256(bytes), diffId: sha256(tar) };
}

interface Image {
  readonly config: Buffer;
  readonly manifest: Buffer;
  readonly digest: string;
}

/** An OCI image of `l` that prints `marker` and exits; `marker` also makes the config unique. */
function image(l: Layer, marker: string): Image {
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/busybox', 'echo', marker], Labels: { 'berth.bench.marker': marker } },
      rootfs: { type: 'layers', diff_ids: [l.diffId] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256(config),
        size: config.length,
      },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.bytes.length },
      ],
    }),
  );
  return { config, manifest, digest: sha256(manifest) };
}

/** POST, one PATCH with the whole body, PUT ?digest= (as docker pushes a blob). */
async function pushBlob(c: Client, repo: string, bytes: Buffer, digest: string) {
  const post = await c.call('POST', `/v2/${repo}/blobs/uploads/`);
  expectStatus(post, 202, `POST /v2/${repo}/blobs/uploads/`);
  const patch = await c.call('PATCH', String(post.headers.location), { body: bytes });
  expectStatus(patch, 202, 'PATCH upload');
  const loc = new URL(String(patch.headers.location), 'https://x');
  loc.searchParams.set('digest', digest);
  expectStatus(await c.call('PUT', loc.pathname + loc.search), 201, 'PUT upload');
}

// ---- berth ----------------------------------------------------------------------------------

interface Berth {
  readonly debounceMs: number;
  readonly target: Target;
  readonly dataDir: string;
  readonly registry: Client;
  readonly admin: Client;
  readonly basic: string;
  readonly ecs: ECSClient;
  readonly host: string;
}

const REPOS = { warm: 'bench/runner-warm', cold: 'bench/runner-cold' } as const;
type Kind = keyof typeof REPOS;

async function api(
  b: Pick<Berth, 'admin' | 'basic'>,
  method: string,
  path: string,
  status: number,
  body?: unknown,
) {
  const r = await b.admin.call(method, `/api/v1${path}`, {
    ...(body !== undefined && { body: Buffer.from(JSON.stringify(body)) }),
    headers: { Authorization: b.basic, ...(body !== undefined && { 'Content-Type': 'application/json' }) },
    keep: true,
  });
  if (r.status !== status)
    throw new Error(
      `${method} /api/v1${path}: expected ${status}, got ${r.status}: ${r.body?.toString('utf8')}`,
    );
  return r.body?.length ? (JSON.parse(r.body.toString('utf8')) as Record<string, unknown>) : {};
}

async function startRunnerBerth(debounceMs: number, bridge: string): Promise<Berth> {
  const target = await startBerth({
    BERTH_RUNNER_HOOK_DEBOUNCE_MS: String(debounceMs),
    BERTH_RUNNER_RUNTIME: opts.runtime,
    // Only bridge-mode tasks would create it; these run with networkMode none. Named for this
    // run anyway, so that nothing here could ever touch another berth's bridge.
    BERTH_RUNNER_BRIDGE_NAME: bridge,
  });
  try {
    const dataDir = dirname(dirname(target.certFile!));
    const basic = basicAuthorization(target.credentials!);
    const admin = client(target.base, target.caPath, 2);
    const registry = client(target.base, target.caPath, 1, target.credentials);
    const b0 = { admin, basic };
    const key = await api(b0, 'POST', '/users/admin/access-keys', 201);
    const ecs = new ECSClient({
      endpoint: `${target.base}/ecs`,
      region: 'us-east-1',
      credentials: { accessKeyId: String(key.id), secretAccessKey: String(key.secret) },
      requestHandler: { httpsAgent: new Agent({ ca: readFileSync(target.caPath), keepAlive: true }) },
    });
    const host = new URL(target.base).host;
    // Hook rules act as a role, which each run is authorized as (part of the measured hook phase).
    await api(b0, 'PUT', '/policies/bench-hooks', 201, {
      document: {
        Version: '2012-10-17',
        Statement: [{ Effect: 'Allow', Action: ['ecs:RunTask', 'registry:Pull'], Resource: '*' }],
      },
    });
    await api(b0, 'POST', '/roles', 201, { name: 'bench-hooks' });
    await api(b0, 'PUT', '/roles/bench-hooks/policies/bench-hooks', 204);
    for (const [kind, repo] of Object.entries(REPOS)) {
      await ecs.send(
        new RegisterTaskDefinitionCommand({
          family: `bench-${kind}`,
          networkMode: 'none',
          containerDefinitions: [
            { name: 'main', image: `${host}/${repo}:latest`, memory: 32, essential: true },
          ],
        }),
      );
      await api(b0, 'POST', '/hooks', 201, {
        rule: {
          name: `bench-${kind}`,
          repository: repo,
          tag: 'latest',
          roleArn: 'arn:aws:iam::000000000000:role/bench-hooks',
          action: { type: 'runTask', cluster: 'default', taskDefinition: `bench-${kind}` },
        },
      });
      await registry.prepare(repo);
    }
    return { debounceMs, target, dataDir, registry, admin, basic, ecs, host };
  } catch (e) {
    await target.stop();
    throw e;
  }
}

interface Sample {
  /** Manifest commit (201) to the container's first output, ms. */
  readonly total: number;
  /** Commit to the task's creation: debounce window, dispatch, run records, RunTask. */
  readonly hook: number;
  /** Task created to image pull started (network setup, persisting). */
  readonly network: number;
  /** Image prepare: manifest and config read, layers unpacked (or found unpacked). */
  readonly image: number;
  /** Image ready to first output: overlay, spec, conmon, runtime create + start, init, exec. */
  readonly start: number;
}

/** conmon's RFC3339Nano (as berth normalizes it: UTC, 9 digits) to epoch ms with the fraction. */
function epochMs(time: string): number {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(time);
  if (!m) throw new Error(`unexpected log time ${time}`);
  return Date.parse(`${m[1]}Z`) + Number(`0.${m[2] ?? '0'}`) * 1000;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

let sequence = 0;
/** The ids of every task this run started: what the cleanup looks for (network namespaces). */
const taskIds: string[] = [];

/** One push of a new manifest to `kind`'s repository, timed from its commit to the first output. */
async function measure(b: Berth, kind: Kind, busybox: Buffer, warmLayer: Layer): Promise<Sample> {
  const repo = REPOS[kind];
  const marker = `bench-${process.pid}-${++sequence}-${randomBytes(4).toString('hex')}`;
  const l = kind === 'warm' ? warmLayer : layer(busybox, marker);
  const img = image(l, marker);
  if (kind === 'cold') await pushBlob(b.registry, repo, l.bytes, l.digest);
  await pushBlob(b.registry, repo, img.config, sha256(img.config));
  const put = await b.registry.call('PUT', `/v2/${repo}/manifests/latest`, {
    body: img.manifest,
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
  });
  const t0 = Date.now();
  expectStatus(put, 201, `PUT /v2/${repo}/manifests/latest`);
  if (put.headers['docker-content-digest'] !== img.digest)
    throw new Error(`berth committed ${put.headers['docker-content-digest']}, pushed ${img.digest}`);

  // Hands off while the hook and the start run: our own requests would compete for the 2 cores.
  await sleep(b.debounceMs + 700);
  const runRecord = await until(`the hook run for ${img.digest}`, async () => {
    const page = await api(b, 'GET', '/hooks/runs?limit=50', 200);
    const items = page.items as {
      digest: string;
      status: string;
      error?: string;
      result?: { taskArns?: string[] };
    }[];
    const r = items.find((x) => x.digest === img.digest);
    if (r?.status === 'failed' || r?.status === 'skipped')
      throw new Error(`the hook run for ${img.digest} ${r.status}: ${JSON.stringify(r)}`);
    return r?.status === 'succeeded' ? r : undefined;
  });
  const taskArn = runRecord.result?.taskArns?.[0];
  if (!taskArn)
    throw new Error(`the hook run for ${img.digest} started no task: ${JSON.stringify(runRecord)}`);
  taskIds.push(taskArn.slice(taskArn.lastIndexOf('/') + 1));
  const task: Task = await until(`task ${taskArn} to stop`, async () => {
    const t = (await b.ecs.send(new DescribeTasksCommand({ cluster: 'default', tasks: [taskArn] })))
      .tasks?.[0];
    return t?.lastStatus === 'STOPPED' ? t : undefined;
  });
  const c = task.containers?.[0];
  if (c?.exitCode !== 0 || c.imageDigest !== img.digest)
    throw new Error(`task ${taskArn}: ${JSON.stringify({ reason: task.stoppedReason, container: c })}`);
  const id = taskArn.slice(taskArn.lastIndexOf('/') + 1);
  const logs = await api(b, 'GET', `/runner/clusters/default/tasks/${id}/logs`, 200);
  const first = (logs.entries as { time: string; stream: string; line: string }[])[0];
  if (first?.line !== marker) throw new Error(`task ${taskArn}: first log entry ${JSON.stringify(first)}`);
  const t1 = epochMs(first.time);
  const at = (d: Date | undefined, what: string) => {
    if (!d) throw new Error(`task ${taskArn} has no ${what}`);
    return d.getTime();
  };
  const created = at(task.createdAt, 'createdAt');
  const pullStarted = at(task.pullStartedAt, 'pullStartedAt');
  const pullStopped = at(task.pullStoppedAt, 'pullStoppedAt');
  return {
    total: t1 - t0,
    hook: created - t0,
    network: pullStarted - created,
    image: pullStopped - pullStarted,
    start: t1 - pullStopped,
  };
}

// ---- the bare runtime -----------------------------------------------------------------------

interface Bundle {
  readonly dir: string;
  readonly state: string;
}

/** `runc spec` in a temp dir, over a rootfs holding busybox, running `busybox echo hi`. */
function bareBundle(busybox: string): Bundle {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-bare-'));
  mkdirSync(join(dir, 'rootfs', 'bin'), { recursive: true });
  copyFileSync(busybox, join(dir, 'rootfs', 'bin', 'busybox'));
  execFileSync('runc', ['spec', '--bundle', dir]);
  const spec = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as {
    process: { terminal: boolean; args: string[] };
    root: { path: string; readonly: boolean };
  };
  spec.process.terminal = false;
  spec.process.args = ['/bin/busybox', 'echo', 'hi'];
  spec.root = { path: 'rootfs', readonly: true };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(spec));
  const state = join(dir, 'state');
  mkdirSync(state);
  return { dir, state };
}

/** `<runtime> run` of the bundle: spawn to the first stdout byte, ms; waits for the exit. */
async function bareRun(runtime: string, b: Bundle, seq: number): Promise<number> {
  const id = `berth-bench-bare-${process.pid}-${seq}`;
  const t0 = performance.now();
  const child: ChildProcess = spawn(runtime, ['--root', b.state, 'run', '--bundle', b.dir, id], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let first: number | undefined;
  let out = '';
  child.stdout!.on('data', (d: Buffer) => {
    first ??= performance.now();
    out += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0 || first === undefined || !out.includes('hi'))
    throw new Error(`${runtime} run exited ${code}: ${out}`);
  return first - t0;
}

// ---- statistics and the report --------------------------------------------------------------

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
/** Nearest rank: the smallest value at or above 90% of the samples. */
const p90 = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.ceil(0.9 * xs.length) - 1]!;
const f0 = (x: number) => x.toFixed(0);
const f1 = (x: number) => x.toFixed(1);

async function main() {
  if (process.getuid?.() !== 0) throw new Error('bench:runner needs root (runc, overlayfs)');
  for (const bin of ['/usr/sbin/runc', '/usr/bin/conmon'])
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run scripts/setup-system.sh`);
  const busyboxPath = ['/usr/bin/busybox', '/bin/busybox'].find((p) => existsSync(p));
  if (!busyboxPath) throw new Error('busybox is missing: run scripts/setup-system.sh (busybox-static)');
  const busybox = readFileSync(busyboxPath);
  const source = sourceVersion();
  const loadBefore = loadavg();
  const started = new Date().toISOString();

  const bridge = `brb${process.pid % 100000}`;
  const berths: Berth[] = [];
  const bundle = bareBundle(busyboxPath);
  const installed = ['runc', ...(existsSync('/usr/bin/crun') ? ['crun'] : [])];
  /** The installed runtimes that work here: the bare baselines. */
  const bareRuntimes = [...installed];
  /** Runtimes that refuse to run a container here, and why (crun on hybrid cgroups, machine.md). */
  const refused = new Map<string, string>();
  const leakedNetns: string[] = [];
  let stopping: Promise<void> | undefined;
  const cleanup = () => {
    stopping ??= (async () => {
      await Promise.all(berths.map((b) => b.target.stop().catch((e) => log(`stopping berth: ${e}`))));
      for (const b of berths) {
        b.registry.close();
        b.admin.close();
        b.ecs.destroy();
      }
      for (const rt of installed) {
        // A bare run cut short by a signal leaves its container in the runtime's state dir.
        try {
          const list = JSON.parse(
            execFileSync(rt, ['--root', bundle.state, 'list', '--format', 'json'], {
              encoding: 'utf8',
            }) || '[]',
          ) as { id: string }[] | null;
          for (const c of list ?? []) execFileSync(rt, ['--root', bundle.state, 'delete', '--force', c.id]);
        } catch {}
      }
      rmSync(bundle.dir, { recursive: true, force: true });
      // berth tears a task's namespace down before it reports the task STOPPED; one left behind
      // is a finding (reported), and ours to remove.
      for (const id of taskIds)
        if (existsSync(`/run/netns/berth-${id}`)) {
          leakedNetns.push(id);
          try {
            execFileSync('ip', ['netns', 'delete', `berth-${id}`], { stdio: 'ignore' });
          } catch {}
        }
      try {
        execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
      } catch {} // not there: no task of this run used a bridge
    })();
    return stopping;
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => {
      log(`bench:runner: ${sig}, stopping`);
      void cleanup().finally(() => process.exit(130));
    });

  const debounces = [500, 0];
  const samples = new Map<string, Sample[]>();
  const bare = new Map<string, number[]>();
  const add = (key: string, s: Sample) => samples.set(key, [...(samples.get(key) ?? []), s]);
  const warmLayer = layer(busybox, 'warm');
  let bareSeq = 0;
  let berthRuntime = opts.runtime;
  try {
    // The bare runs' warm-up, which also tells which runtimes work here at all: berth's `auto`
    // probes crun, then runc, the same way, and takes the first that runs a container.
    for (const rt of installed) {
      try {
        await bareRun(rt, bundle, bareSeq++);
        bare.set(rt, []);
      } catch (e) {
        if (rt === 'runc') throw e;
        refused.set(rt, (e as Error).message.replace(/\s+/g, ' ').trim());
        bareRuntimes.splice(bareRuntimes.indexOf(rt), 1);
      }
    }
    if (berthRuntime === 'auto') berthRuntime = bareRuntimes.includes('crun') ? 'crun' : 'runc';
    for (const d of debounces) {
      const b = await startRunnerBerth(d, bridge);
      berths.push(b);
      log(`berth, hook debounce ${d} ms: ${b.target.base} (pid ${b.target.pid})`);
      await pushBlob(b.registry, REPOS.warm, warmLayer.bytes, warmLayer.digest);
    }
    // Warm-ups, not recorded: the first warm push unpacks the shared layer; one cold push and
    // one bare run of each runtime bring the code paths, the JIT and the page cache in.
    for (const b of berths) {
      for (const kind of ['warm', 'cold'] as const) {
        const s = await measure(b, kind, busybox, warmLayer);
        log(`warm-up, debounce ${b.debounceMs} ms, ${kind}: ${f0(s.total)} ms`);
      }
    }

    // Every round measures each kind on each berth and each bare runtime once, the berths' order
    // alternating, so a noisy moment of the shared cores does not land on one variant only.
    const rounds = Math.max(opts.warm, opts.cold, opts.bare);
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? berths : [...berths].reverse();
      for (const b of order) {
        for (const kind of ['warm', 'cold'] as const) {
          if (round >= (kind === 'warm' ? opts.warm : opts.cold)) continue;
          const s = await measure(b, kind, busybox, warmLayer);
          add(`${kind} ${b.debounceMs}`, s);
          log(
            `round ${round + 1}, debounce ${b.debounceMs} ms, ${kind}: ${f0(s.total)} ms ` +
              `(hook ${f0(s.hook)}, network ${f0(s.network)}, image ${f0(s.image)}, start ${f0(s.start)})`,
          );
        }
      }
      if (round < opts.bare)
        for (const rt of bareRuntimes) {
          const ms = await bareRun(rt, bundle, bareSeq++);
          bare.get(rt)!.push(ms);
          log(`round ${round + 1}, bare ${rt} run: ${f1(ms)} ms`);
        }
    }
  } finally {
    await cleanup();
  }
  const loadAfter = loadavg();

  // ---- the report ----
  const rows: string[] = [];
  const warm0 = samples.get('warm 0')!;
  const warmMedian = median(warm0.map((s) => s.total));
  const bareOf = (rt: string) => median(bare.get(rt) ?? []);
  const met = warmMedian < WARM_START_TARGET_MS;
  for (const kind of ['warm', 'cold'] as const)
    for (const d of debounces) {
      const xs = samples.get(`${kind} ${d}`) ?? [];
      const tot = xs.map((s) => s.total);
      const part = (k: keyof Sample) => f0(median(xs.map((s) => s[k])));
      const target = kind === 'warm' && d === 0 ? `< ${WARM_START_TARGET_MS} ms (median)` : '—';
      const result = kind === 'warm' && d === 0 ? (met ? 'pass' : '**miss**') : '—';
      rows.push(
        `| ${kind}, debounce ${d} ms | ${xs.length} | ${f0(median(tot))} | ${f0(p90(tot))} | ${part('hook')} / ${part('network')} / ${part('image')} / ${part('start')} | ${target} | ${result} |`,
      );
    }
  const bareRows = bareRuntimes.map((rt) => {
    const xs = bare.get(rt)!;
    return `| bare \`${rt} run\` | ${xs.length} | ${f1(median(xs))} | ${f1(p90(xs))} | ${xs.map(f1).join(', ')} |`;
  });
  const overheadLines = bareRuntimes.map(
    (rt) =>
      `- over bare \`${rt} run\`: ${f0(warmMedian - bareOf(rt))} ms (warm, debounce 0 median ${f0(warmMedian)} ms − ${f1(bareOf(rt))} ms)${rt === berthRuntime ? ' — the runtime berth used' : ''}`,
  );
  const raw = [...samples].map(([key, xs]) => `- ${key} ms: ${xs.map((s) => f0(s.total)).join(', ')}`);
  const lines = [
    '# Runner benchmark results',
    '',
    'Generated by bench/runner.ts (`npm run bench:runner`); overwritten by every full run. Raw samples of each run go to bench/out/.',
    '',
    `- Command: \`${command}\``,
    `- Date: ${started}`,
    `- Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}; berth ${source}`,
    `- Load average (1/5/15 min) before: ${loadBefore.map((x) => x.toFixed(2)).join(' / ')}, after: ${loadAfter.map((x) => x.toFixed(2)).join(' / ')} — other sessions' test suites share the 2 cores, so single samples are noisy; read the medians.`,
    '- berth: two started by the harness (`node src/cli.ts serve`), alike (filesystem storage in a temp dir, HTTPS with its own CA, auth on, encryption at rest on, BERTH_LOG_LEVEL=warn) but for BERTH_RUNNER_HOOK_DEBOUNCE_MS=500 / 0 (the default);' +
      ` runner.runtime=${opts.runtime}, so berth ran its containers with ${berthRuntime} (conmon as monitor, tini as init, an overlay rootfs; each container in a user namespace, under the default seccomp profile, with a pids limit).`,
    '- Image: one gzip layer (busybox-static at /bin/busybox, ~1.9 MiB, and a file naming the layer), an OCI config whose Cmd is `busybox echo <marker>`, an OCI manifest; pushed over HTTPS with Bearer tokens (layer and config first, outside the timing).',
    '- Trigger: a hook rule `runTask` on `<repo>:latest` with a task definition of one container (networkMode none, 32 MiB).',
    "- t0: the manifest PUT answered 201 (berth answers once the push is in the hooks' journal). t1: conmon's timestamp on the container's first stdout line (read back through the logs API after the task stopped). Same host clock; the harness sends berth nothing between t0 and t0 + debounce + 700 ms.",
    '- Warm: a new config (new manifest digest) over the same layer, unpacked during a warm-up push. Cold: a new layer (busybox and a file of its own) every time: read from storage, decrypted, gunzipped, unpacked.',
    "- Phases (medians, from the task's ECS timestamps, ms precision): hook = commit → task created (debounce window, dispatch, run records, RunTask); network = created → image pull started; image = pull started → stopped (manifest, config, layers); start = image ready → first output (overlay mount, runtime spec, conmon, runtime create and start, init, exec).",
    `- Bare: \`${bareRuntimes.join(' run` and `')} run\` of a bundle from \`runc spec\` (its default namespaces, terminal off, read-only root) over busybox in a plain directory, running \`busybox echo hi\`: spawn to first stdout byte. No conmon, no overlay, no init, no cgroup limits.${[...refused].map(([rt, why]) => ` ${rt} refuses to run a container on this host (${why}), so berth's \`auto\` does not take it either.`).join('')}`,
    ...(leakedNetns.length
      ? [
          `- **Leak:** ${leakedNetns.length} of ${taskIds.length} STOPPED tasks left their network namespace behind (berth-${leakedNetns.join(', berth-')}); the harness deleted them.`,
        ]
      : [`- All ${taskIds.length} tasks' network namespaces were gone once they were STOPPED.`]),
    '- Every round measures each case once on each berth (their order alternating) and each bare runtime once; one unrecorded warm-up of each precedes.',
    '',
    `**Warm start (debounce 0), median ${f0(warmMedian)} ms: target < ${WARM_START_TARGET_MS} ms ${met ? 'met' : 'missed'}.**`,
    '',
    '## Push committed → container running (first output)',
    '',
    '| case | n | median ms | p90 ms | hook / network / image / start ms (medians) | target | result |',
    '| --- | ---: | ---: | ---: | --- | --- | --- |',
    ...rows,
    '',
    '## Bare runtime baseline',
    '',
    '| case | n | median ms | p90 ms | samples ms |',
    '| --- | ---: | ---: | ---: | --- |',
    ...bareRows,
    '',
    "## The runner's overhead (warm, debounce 0, minus bare)",
    '',
    ...overheadLines,
    '',
    '## Raw samples (commit → first output, in order)',
    '',
    ...raw,
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(`\n${text}`);
  const outDir = resolve(import.meta.dirname, 'out');
  mkdirSync(outDir, { recursive: true });
  const json = join(outDir, `runner-${started.replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    json,
    JSON.stringify(
      {
        command,
        started,
        source,
        loadBefore,
        loadAfter,
        berthRuntime,
        samples: Object.fromEntries(samples),
        bare: Object.fromEntries(bare),
      },
      null,
      2,
    ),
  );
  log(`raw numbers: ${json}`);
  if (!opts.quick) {
    writeFileSync(resolve(import.meta.dirname, 'RUNNER-RESULTS.md'), text);
    log('written: bench/RUNNER-RESULTS.md');
  } else log('bench/RUNNER-RESULTS.md not written (--quick)');
  if (!met) log(`target missed: warm start median ${f0(warmMedian)} ms >= ${WARM_START_TARGET_MS} ms`);
}

await main();
