// The command line as users meet it: help, bad configuration, a start and a stop.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startBerth } from './support/berth.ts';
import { httpsClient } from './support/https.ts';

const root = resolve(import.meta.dirname, '..');

function cli(args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((res) => {
    execFile(
      process.execPath,
      ['src/cli.ts', ...args],
      { cwd: root, env: { ...process.env, ...env } },
      (err, stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('berth CLI', () => {
  it('documents every flag and config key in --help', async () => {
    const { code, stdout } = await cli(['--help']);
    expect(code).toBe(0);
    for (const s of ['--listen', '--data', '--config', 'BERTH_TLS_CERT_FILE', 'registry.manifestMaxBytes']) {
      expect(stdout).toContain(s);
    }
  });

  it('stops with a message naming the bad key', async () => {
    const bad = await cli(['serve', '--listen', 'nowhere'], {});
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/config listen: must be HOST:PORT/);
    const env = await cli(['serve'], { BERTH_REGISTRY_DELETE_ENABLED: 'perhaps' });
    expect(env.code).toBe(2);
    expect(env.stderr).toContain('registry.deleteEnabled');
    const dir = mkdtempSync(join(tmpdir(), 'berth-cli-'));
    try {
      writeFileSync(join(dir, 'c.json'), JSON.stringify({ storage: { driver: 'tape' } }));
      const file = await cli(['serve', '--config', join(dir, 'c.json')]);
      expect(file.code).toBe(2);
      expect(file.stderr).toContain('storage.driver');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses unknown commands and flags', async () => {
    expect((await cli(['frobnicate'])).code).toBe(2);
    expect((await cli(['serve', '--nope'])).code).toBe(2);
  });

  it('serves with the flags given, prints how to trust its CA, and exits 0 on SIGTERM', async () => {
    const berth = await startBerth();
    const logs = berth.logs().join('\n');
    expect(logs).toContain(`/etc/docker/certs.d/${berth.hostPort}/ca.crt`);
    expect(logs).toContain(`/etc/containers/certs.d/${berth.hostPort}/ca.crt`);
    const res = await httpsClient(berth.url, berth.caPath)('/readyz');
    expect(res.status).toBe(200);
    const exit = new Promise<number | null>((r) => berth.process.once('exit', (code) => r(code)));
    await berth.stop();
    expect(await exit).toBe(0);
  });
});
