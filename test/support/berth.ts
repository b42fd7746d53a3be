// Starts the real berth CLI (`node src/cli.ts serve`) as a child process, the way users run it.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export interface RunningBerth {
  /** The bootstrap administrator (auth is on, as by default). */
  readonly admin: { readonly username: string; readonly password: string };
  /** An Authorization header value signing in as the administrator with Basic credentials. */
  readonly adminBasic: string;
  readonly url: string;
  /** 127.0.0.1:PORT, as clients name the registry. */
  readonly hostPort: string;
  readonly caPath: string;
  readonly dataDir: string;
  readonly process: ChildProcess;
  logs(): string[];
  stop(): Promise<void>;
}

const root = resolve(import.meta.dirname, '..', '..');

/** The bootstrap admin's password in every berth the suites start (auth is on, as by default). */
export const adminPassword = 'e2e-admin-password';

export async function startBerth(
  opts: { dataDir?: string; args?: string[]; env?: Record<string, string> } = {},
): Promise<RunningBerth> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'berth-e2e-'));
  const child = spawn(
    process.execPath,
    ['src/cli.ts', 'serve', '--listen', '127.0.0.1:0', '--data', dataDir, ...(opts.args ?? [])],
    {
      cwd: root,
      env: { ...process.env, BERTH_ADMIN_PASSWORD: adminPassword, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  // If the test process ends without stop() (a crash, a timeout), take the server with it.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  child.once('exit', () => process.off('exit', reap));
  const lines: string[] = [];
  let buffered = '';
  const listening = new Promise<{ address: string; url: string; caPath: string }>(
    (resolveListening, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`berth did not start in 30 s:\n${lines.join('\n')}`)),
        30_000,
      );
      child.stdout!.on('data', (d: Buffer) => {
        buffered += d.toString();
        let nl = buffered.indexOf('\n');
        while (nl >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          lines.push(line);
          try {
            const entry = JSON.parse(line) as { msg?: string; address: string; url: string; caPath: string };
            if (entry.msg === 'listening') {
              clearTimeout(timer);
              resolveListening(entry);
            }
          } catch {
            // not a JSON line
          }
          nl = buffered.indexOf('\n');
        }
      });
      child.stderr!.on('data', (d: Buffer) => {
        const text = d.toString();
        lines.push(text);
        // With log.level above info the 'listening' line is not logged; the trust notice on
        // stderr names the address too.
        const m = /berth is serving (https:\/\/([\d.]+:\d+))/.exec(text);
        if (m) {
          clearTimeout(timer);
          resolveListening({ address: m[2]!, url: m[1]!, caPath: join(dataDir, 'tls', 'ca.crt') });
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`berth exited with ${code} before listening:\n${lines.join('\n')}`));
      });
    },
  );
  let info: Awaited<typeof listening>;
  try {
    info = await listening;
  } catch (e) {
    // A start that failed leaves neither a process nor a data dir behind.
    if (child.exitCode === null) child.kill('SIGKILL');
    if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  return {
    admin: { username: 'admin', password: adminPassword },
    adminBasic: `Basic ${Buffer.from(`admin:${adminPassword}`).toString('base64')}`,
    url: info.url,
    hostPort: info.address,
    caPath: info.caPath,
    dataDir,
    process: child,
    logs: () => lines,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
