// A private Docker daemon (Debian's docker.io) on its own socket and directories, started and
// stopped by the suite by PID; the machine's own Docker setup, if any, is not touched.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunResult, run, tool } from './tools.ts';

export interface Dockerd {
  docker(...args: string[]): Promise<RunResult>;
  /** docker login with the password on stdin, as CI scripts do. */
  login(registry: string, username: string, password: string): Promise<RunResult>;
  /** Makes the daemon trust caPath for registry hostPort (removed again by stop()). */
  trust(hostPort: string, caPath: string): void;
  stop(): Promise<void>;
}

export async function startDockerd(): Promise<Dockerd> {
  const dir = mkdtempSync(join(tmpdir(), 'berth-dockerd-'));
  const sock = join(dir, 'docker.sock');
  const log: string[] = [];
  const daemon: ChildProcess = spawn(
    tool('dockerd'),
    [
      '--host',
      `unix://${sock}`,
      '--data-root',
      join(dir, 'root'),
      '--exec-root',
      join(dir, 'exec'),
      '--pidfile',
      join(dir, 'dockerd.pid'),
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const reap = () => daemon.kill('SIGKILL');
  process.once('exit', reap);
  daemon.once('exit', () => process.off('exit', reap));
  daemon.stdout!.on('data', (d: Buffer) => log.push(d.toString()));
  daemon.stderr!.on('data', (d: Buffer) => log.push(d.toString()));
  const docker = tool('docker'); // /usr/bin/docker from docker.io, not a client-only binary elsewhere
  const env = { DOCKER_HOST: `unix://${sock}`, DOCKER_CONFIG: join(dir, 'config'), DOCKER_BUILDKIT: '0' };
  mkdirSync(env.DOCKER_CONFIG);
  const trusted: string[] = [];

  const deadline = Date.now() + 60_000;
  for (;;) {
    if (daemon.exitCode !== null) throw new Error(`dockerd exited with ${daemon.exitCode}:\n${log.join('')}`);
    try {
      await run(docker, ['version', '--format', '{{.Server.Version}}'], { env, timeoutMs: 10_000 });
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`dockerd did not answer in 60 s:\n${log.join('')}\n${e}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  return {
    docker: (...args) => run(docker, args, { env, timeoutMs: 180_000 }),
    login: (registry, username, password) =>
      run(docker, ['login', '-u', username, '--password-stdin', registry], {
        env,
        timeoutMs: 60_000,
        input: password,
      }),
    trust(hostPort, caPath) {
      const certDir = join('/etc/docker/certs.d', hostPort);
      mkdirSync(certDir, { recursive: true });
      writeFileSync(join(certDir, 'ca.crt'), readFileSync(caPath));
      trusted.push(certDir);
    },
    async stop() {
      for (const d of trusted) rmSync(d, { recursive: true, force: true });
      if (daemon.exitCode === null) {
        const exited = new Promise((r) => daemon.once('exit', r));
        daemon.kill('SIGTERM');
        const timer = setTimeout(() => daemon.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(timer);
      }
      // Overlay mounts of stopped containers are gone with the daemon; what remains is plain files.
      await run('umount', ['-R', join(dir, 'root')]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
