// The registries the benchmark compares, each over HTTPS on 127.0.0.1: berth (started through its
// CLI with filesystem storage, or one already running) and CNCF Distribution 2.8.2 (Debian's
// docker-registry, filesystem storage). What the harness starts it stops by its own PID, and
// it removes the temp dirs it made. berth starts with auth on, as by default, unless told
// otherwise (BERTH_AUTH_ENABLED=false): its bootstrap admin gets a password made for the run, and
// the benchmark signs in with it (token auth, as docker does; see client.ts).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Credentials } from './client.ts';

export type TargetName = 'berth' | 'distribution';

export interface Target {
  readonly name: TargetName;
  /** https://127.0.0.1:PORT */
  readonly base: string;
  /** PEM file of the CA that signed the server certificate. */
  readonly caPath: string;
  /** Undefined when the harness did not start the process. */
  readonly pid: number | undefined;
  /** Server certificate and key, when the harness can read them (to serve Distribution alike). */
  readonly certFile?: string;
  readonly keyFile?: string;
  /** How it was configured, for the report. */
  readonly settings: readonly string[];
  /** Who the benchmark signs in as (berth with auth on); Distribution runs without auth. */
  readonly credentials?: Credentials;
  /** GET /v2/ without credentials answered 401: every request is authenticated and authorized. */
  readonly authenticated: boolean;
  stop(): Promise<void>;
}

const root = resolve(import.meta.dirname, '..');
const STARTUP_MS = 30_000;

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

function stopper(child: ChildProcess, dir: string | undefined): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => {
    done ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        const pid = child.pid;
        if (pid !== undefined) process.kill(pid, 'SIGTERM');
        const killer = setTimeout(() => pid !== undefined && process.kill(pid, 'SIGKILL'), 10_000);
        await exited;
        clearTimeout(killer);
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    })();
    return done;
  };
}

/** Resolves once GET /v2/ answers 200 or 401 over TLS trusting `ca`, to that status. */
async function waitUntilServing(
  base: string,
  ca: Buffer,
  child: ChildProcess | undefined,
  out: () => string,
): Promise<200 | 401> {
  const deadline = Date.now() + STARTUP_MS;
  for (;;) {
    if (child && child.exitCode !== null)
      throw new Error(`${base}: process exited ${child.exitCode}:\n${out()}`);
    const status = await new Promise<number | string>((res) => {
      const req = request(`${base}/v2/`, { ca, agent: false, timeout: 2000 }, (r) => {
        r.resume();
        res(r.statusCode ?? 0);
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => res(e.message));
      req.end();
    });
    if (status === 200 || status === 401) return status;
    if (Date.now() > deadline) throw new Error(`${base}/v2/ did not answer (last: ${status}):\n${out()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Starts `node src/cli.ts serve --listen 127.0.0.1:0 --data TMP` and waits for it to say where it
 * listens: the JSON log line with "msg":"listening" on stdout, or (when info logs are off, as here,
 * so that access logs cost nothing) the human "serving https://HOST:PORT" line on stderr.
 */
export async function startBerth(
  extraEnv: Readonly<Record<string, string>> = {},
  /** The berth source tree to run (default this one; bench/ab.ts runs another beside it). */
  sourceRoot: string = root,
): Promise<Target> {
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-bench-'));
  // Access logs off, as for Distribution below: the benchmark measures serving, not logging.
  const env: Record<string, string | undefined> = {
    ...process.env,
    BERTH_LOG_LEVEL: 'warn',
    BERTH_ADMIN_PASSWORD: `bench-${randomBytes(12).toString('hex')}`,
    ...extraEnv,
  };
  const child = spawn(
    process.execPath,
    ['src/cli.ts', 'serve', '--listen', '127.0.0.1:0', '--data', dataDir],
    {
      cwd: sourceRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const stop = stopper(child, dataDir);
  let out = '';
  try {
    const address = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`berth did not start:\n${out}`)), STARTUP_MS);
      const scan = () => {
        for (const line of out.split('\n')) {
          if (line.startsWith('{') && line.includes('"listening"')) {
            try {
              const j = JSON.parse(line) as { msg?: string; address?: string };
              if (j.msg === 'listening' && j.address) return j.address;
            } catch {}
          }
        }
        return /serving https:\/\/([\w.-]+:\d+)/.exec(out)?.[1];
      };
      const onData = (d: Buffer) => {
        out = (out + d.toString()).slice(-65536);
        const a = scan();
        if (a) {
          clearTimeout(timer);
          res(a.replace(/^localhost:/, '127.0.0.1:'));
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => rej(new Error(`berth exited ${code}:\n${out}`)));
    });
    // The listeners stay: they keep draining both pipes, so the server never blocks on one.
    const base = `https://${address}`;
    const tls = join(dataDir, 'tls');
    const caPath = join(tls, 'ca.crt');
    const status = await waitUntilServing(base, readFileSync(caPath), child, () => out);
    const secret = /KEY|SECRET|TOKEN|PASSWORD/i;
    const settings = Object.entries(env)
      .filter(([k]) => k.startsWith('BERTH_'))
      .map(([k, v]) => `${k}=${secret.test(k) && !/FILE$/.test(k) ? '(redacted)' : v}`);
    settings.push(
      status === 401
        ? 'auth on (token auth: the client signs in as admin and sends Bearer tokens)'
        : 'auth off (GET /v2/ answers 200 without credentials)',
      existsSync(join(dataDir, 'keys', 'kek.json'))
        ? 'encryption at rest on (it created DATA/keys/kek.json)'
        : 'no DATA/keys/kek.json (encryption at rest off, or keys given inline)',
    );
    return {
      name: 'berth',
      settings,
      base,
      caPath,
      pid: child.pid,
      certFile: join(tls, 'server.crt'),
      keyFile: join(tls, 'server.key'),
      credentials: { username: 'admin', password: env.BERTH_ADMIN_PASSWORD! },
      authenticated: status === 401,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** A berth the harness did not start: only checked, never stopped. */
export async function externalBerth(url: string, caPath: string, credentials?: Credentials): Promise<Target> {
  const base = url.replace(/\/+$/, '');
  const status = await waitUntilServing(base, readFileSync(caPath), undefined, () => '');
  if (status === 401 && !credentials)
    throw new Error(
      `${base} asks for credentials: pass --credentials USER:PASSWORD (or set BERTH_ADMIN_PASSWORD)`,
    );
  return {
    name: 'berth',
    base,
    caPath,
    pid: undefined,
    settings: [status === 401 ? `auth on, signed in as ${credentials!.username}` : 'auth off'],
    ...(credentials && { credentials }),
    authenticated: status === 401,
    stop: async () => {},
  };
}

export function distributionVersion(): string {
  try {
    return execFileSync('docker-registry', ['--version'], { encoding: 'utf8' }).trim();
  } catch (e) {
    throw new Error(
      `docker-registry is not installed (run scripts/setup-system.sh): ${(e as Error).message}`,
    );
  }
}

/** A throwaway CA and a server certificate for 127.0.0.1/localhost, RSA 2048 like berth's. */
function makeTls(dir: string): { certFile: string; keyFile: string; caPath: string } {
  const p = (f: string) => join(dir, f);
  const run = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run([
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=berth bench CA',
    '-keyout',
    p('ca.key'),
    '-out',
    p('ca.crt'),
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  run([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    p('server.key'),
    '-out',
    p('server.csr'),
  ]);
  writeFileSync(
    p('server.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' +
      'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n',
  );
  run([
    'x509',
    '-req',
    '-in',
    p('server.csr'),
    '-CA',
    p('ca.crt'),
    '-CAkey',
    p('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    p('server.ext'),
    '-out',
    p('server.crt'),
  ]);
  return { certFile: p('server.crt'), keyFile: p('server.key'), caPath: p('ca.crt') };
}

/**
 * Starts Distribution on a free port with filesystem storage in a temp dir. `tls` is the
 * certificate to serve (berth's, so both sides do the same TLS work); without it a throwaway
 * CA is made with openssl.
 */
export async function startDistribution(tls?: { certFile: string; keyFile: string; caPath: string }) {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-distribution-'));
  try {
    const material = tls && existsSync(tls.certFile) && existsSync(tls.keyFile) ? tls : makeTls(dir);
    const port = await freePort();
    const config = join(dir, 'config.yml');
    writeFileSync(
      config,
      [
        'version: 0.1',
        'log:',
        '  level: error',
        '  accesslog:',
        '    disabled: true',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${join(dir, 'data')}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: 127.0.0.1:${port}`,
        '  tls:',
        `    certificate: ${material.certFile}`,
        `    key: ${material.keyFile}`,
        '',
      ].join('\n'),
    );
    const env = { ...process.env };
    delete env.AWS_CA_BUNDLE; // only Distribution's s3 driver chokes on it; dropped for the same env
    const child = spawn('docker-registry', ['serve', config], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const stop = stopper(child, dir);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const base = `https://127.0.0.1:${port}`;
    try {
      const status = await waitUntilServing(base, readFileSync(material.caPath), child, () => out);
      if (status !== 200) throw new Error(`Distribution answers GET /v2/ with ${status}, not 200`);
    } catch (e) {
      await stop();
      throw e;
    }
    const target: Target = {
      name: 'distribution',
      base,
      caPath: material.caPath,
      pid: child.pid,
      settings: [material === tls ? "berth's certificate and key" : 'a throwaway openssl CA (RSA 2048)'],
      authenticated: false,
      stop,
    };
    return target;
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
