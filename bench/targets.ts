// Starts the two registries the benchmark compares, both over HTTPS on 127.0.0.1 with the same
// certificate: berth (its CLI, filesystem storage) and CNCF Distribution 2.8.2 (Debian's
// docker-registry, filesystem storage). Each is stopped by its own PID.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export interface Target {
  readonly name: string;
  readonly base: string;
  readonly caPath: string;
  readonly pid: number;
  stop(): Promise<void>;
}

const root = resolve(import.meta.dirname, '..');

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
  return async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
}

export async function startBerthTarget(): Promise<Target & { dataDir: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'berth-bench-'));
  const child = spawn(
    process.execPath,
    ['src/cli.ts', 'serve', '--listen', '127.0.0.1:0', '--data', dataDir],
    {
      cwd: root,
      // Access logs off, as for Distribution below: the benchmark measures serving, not logging.
      env: { ...process.env, BERTH_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  const info = await new Promise<{ url: string; caPath: string }>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`berth did not start:\n${out}`)), 30_000);
    // With log level warn the listening line is not logged; poll /v2/ instead.
    child.stderr!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /serving https:\/\/([\d.]+:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        res({ url: `https://${m[1]}`, caPath: join(dataDir, 'tls', 'ca.crt') });
      }
    });
    child.once('exit', (code) => rej(new Error(`berth exited ${code}:\n${out}`)));
  });
  return {
    name: 'berth',
    base: info.url,
    caPath: info.caPath,
    pid: child.pid!,
    dataDir,
    stop: stopper(child, dataDir),
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

export async function startDistribution(certFile: string, keyFile: string, caPath: string): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-distribution-'));
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
      `    certificate: ${certFile}`,
      `    key: ${keyFile}`,
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  delete env.AWS_CA_BUNDLE; // Distribution's s3 driver panics on it; harmless to drop here too
  const child = spawn('docker-registry', ['serve', config], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const base = `https://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  const ca = readFileSync(caPath);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited ${child.exitCode}:\n${out}`);
    const ok = await new Promise<boolean>((res) => {
      const req = request(`${base}/v2/`, { ca, agent: false }, (r) => {
        r.resume();
        res(r.statusCode === 200);
      });
      req.on('error', () => res(false));
      req.end();
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { name: 'distribution', base, caPath, pid: child.pid!, stop: stopper(child, dir) };
}
