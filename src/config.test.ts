import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configReference, envName, keys, loadConfig, parseHostPort } from './config.ts';
import { ConfigError } from './errors.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function file(content: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'berth-config-'));
  dirs.push(dir);
  const p = join(dir, 'berth.json');
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}

describe('config', () => {
  it('has defaults for a plain start', () => {
    const c = loadConfig({ env: {} });
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 5000 });
    expect(c.data).toBe(resolve('./data'));
    expect(c.storage.filesystem.root).toBe(resolve('./data/storage'));
    expect(c.tls.enabled).toBe(true);
    expect(c.registry.manifestMaxBytes).toBe(4 * 1024 * 1024);
    expect(Object.isFrozen(c.registry)).toBe(true);
  });

  it('names env vars BERTH_ + the key path in upper snake case', () => {
    expect(envName('tls.certFile')).toBe('BERTH_TLS_CERT_FILE');
    expect(envName('registry.manifestMaxBytes')).toBe('BERTH_REGISTRY_MANIFEST_MAX_BYTES');
    expect(envName('listen')).toBe('BERTH_LISTEN');
  });

  it('layers file < env < flags', () => {
    const f = file({ listen: '127.0.0.1:6000', log: { level: 'warn' }, registry: { chunkMinLength: 10 } });
    const c = loadConfig({
      file: f,
      env: {
        BERTH_LISTEN: '127.0.0.1:7000',
        BERTH_REGISTRY_CHUNK_MIN_LENGTH: '20',
        BERTH_TLS_NAMES: 'a.example, 10.0.0.1',
      },
      flags: { listen: '127.0.0.1:8000' },
    });
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8000 });
    expect(c.log.level).toBe('warn');
    expect(c.registry.chunkMinLength).toBe(20);
    expect(c.tls.names).toEqual(['a.example', '10.0.0.1']);
  });

  it('every key can be set from the environment', () => {
    const samples: Record<string, string> = {
      hostport: '[::1]:1234',
      string: '/tmp/x',
      number: '6000000',
      boolean: 'false',
      list: 'a,b',
      level: 'debug',
      driver: 'memory',
    };
    const special: Record<string, string> = {
      'storage.s3.endpoint': 'http://127.0.0.1:7480',
      'runner.runtime': 'runc',
      'runner.accountId': '123456789012',
      'runner.bridgeSubnet': '10.99.0.0/16',
      'runner.hostPathAllowList': '/srv/a,/srv/b/',
    };
    const env: Record<string, string> = {};
    for (const [k, spec] of Object.entries(keys)) env[envName(k)] = special[k] ?? samples[spec.type]!;
    const c = loadConfig({ env });
    expect(c.listen).toEqual({ host: '::1', port: 1234 });
    expect(c.tls.certFile).toBe('/tmp/x');
    expect(c.storage.driver).toBe('memory');
    expect(c.server.trustProxy).toBe(false);
    expect(c.storage.s3).toMatchObject({
      endpoint: 'http://127.0.0.1:7480',
      bucket: '/tmp/x',
      partSize: 6000000,
    });
    expect(c.runner).toMatchObject({
      runtime: 'runc',
      accountId: '123456789012',
      bridgeSubnet: '10.99.0.0/16',
      hostPathAllowList: ['/srv/a', '/srv/b'],
      allowHostNetwork: false,
    });
  });

  it('allows no host paths and no host network by default', () => {
    const c = loadConfig({ env: {} });
    expect(c.runner.hostPathAllowList).toEqual([]);
    expect(c.runner.allowHostNetwork).toBe(false);
  });

  describe('runner.hostPathAllowList', () => {
    const base = mkdtempSync(join(tmpdir(), 'berth-allow-'));
    dirs.push(base);
    const data = join(base, 'data');
    const refusal = (list: string, extra: Record<string, string> = {}) => {
      try {
        loadConfig({ env: { BERTH_RUNNER_HOST_PATH_ALLOW_LIST: list, BERTH_DATA: data, ...extra } });
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        expect((e as ConfigError).key).toBe('runner.hostPathAllowList');
        return (e as Error).message;
      }
      throw new Error(`${list} was accepted`);
    };

    it('takes absolute directories, normalised', () => {
      const c = loadConfig({
        env: { BERTH_RUNNER_HOST_PATH_ALLOW_LIST: '/srv/shared/, /srv/x/../cache', BERTH_DATA: data },
      });
      expect(c.runner.hostPathAllowList).toEqual(['/srv/shared', '/srv/cache']);
    });

    it('refuses a relative entry', () => {
      expect(refusal('srv/shared')).toContain("'srv/shared' is not an absolute path");
    });

    it.each([
      ['/', 'would allow every path on the host'],
      ['/proc', "'/proc' is /proc"],
      ['/sys/fs', "'/sys/fs' lies inside /sys"],
      ['/dev/shm', "'/dev/shm' lies inside /dev"],
    ])('refuses %s', (entry, why) => {
      expect(refusal(entry)).toContain(why);
    });

    it("refuses berth's own files and any directory holding them, naming the key that places them", () => {
      expect(refusal(base)).toContain(`'${base}' contains berth's data directory (data)`);
      expect(refusal(join(data, 'runner', 'volumes'))).toContain("lies inside berth's data directory (data)");
      expect(refusal('/etc/berth', { BERTH_ENCRYPTION_KEY_FILE: '/etc/berth/kek.json' })).toContain(
        "'/etc/berth' contains berth's key-encryption keys (encryption.keyFile)",
      );
      expect(refusal('/var/lib/tasks', { BERTH_RUNNER_ROOT: '/var/lib/tasks/root' })).toContain(
        "contains berth's runner root (runner.root)",
      );
    });

    it('refuses an entry that resolves to a guarded path through a symlink', () => {
      const link = join(base, 'shared-link');
      symlinkSync('/', link);
      expect(refusal(link)).toContain(`'${link}' (resolving to '/') would allow every path on the host`);
    });
  });

  it.each([
    [{ env: { BERTH_LISTEN: 'nope' } }, 'listen'],
    [{ env: { BERTH_REGISTRY_MANIFEST_MAX_BYTES: '100' } }, 'registry.manifestMaxBytes'],
    [{ env: { BERTH_TLS_ENABLED: 'maybe' } }, 'tls.enabled'],
    [{ env: { BERTH_STORAGE_DRIVER: 'floppy' } }, 'storage.driver'],
    [{ env: { BERTH_RUNNER_RUNTIME: 'docker' } }, 'runner.runtime'],
    [{ env: { BERTH_RUNNER_ACCOUNT_ID: '12' } }, 'runner.accountId'],
    [{ env: { BERTH_RUNNER_BRIDGE_SUBNET: '10.0.0.0/8' } }, 'runner.bridgeSubnet'],
    [{ env: { BERTH_TLS_CERT_FILE: '/x.crt' } }, 'tls.keyFile'],
    [{ env: {}, file: file({ lisen: '1:2' }) }, 'lisen'],
    [{ env: {}, file: file({ registry: { chunkMinLength: 'big' } }) }, 'registry.chunkMinLength'],
    [{ env: {}, file: file('{oops') }, '--config'],
    [{ env: { BERTH_STORAGE_DRIVER: 's3' } }, 'storage.s3.bucket'],
    [{ env: { BERTH_STORAGE_S3_ENDPOINT: 'localhost:7480' } }, 'storage.s3.endpoint'],
    [{ env: { BERTH_STORAGE_S3_ACCESS_KEY_ID: 'k' } }, 'storage.s3.secretAccessKey'],
    [{ env: { BERTH_STORAGE_S3_PART_SIZE: '1048576' } }, 'storage.s3.partSize'],
    // A range that would reach host uid 0 or the host's own accounts, or past 2^31.
    [{ env: { BERTH_RUNNER_USER_NAMESPACE_HOST_ID_START: '0' } }, 'runner.userNamespace.hostIdStart'],
    [{ env: { BERTH_RUNNER_USER_NAMESPACE_HOST_ID_START: '1000' } }, 'runner.userNamespace.hostIdStart'],
    [
      { env: { BERTH_RUNNER_USER_NAMESPACE_HOST_ID_START: '2147418113' } },
      'runner.userNamespace.hostIdStart',
    ],
    [{ env: { BERTH_RUNNER_USER_NAMESPACE_HOST_ID_START: '100000.5' } }, 'runner.userNamespace.hostIdStart'],
    [{ env: { BERTH_RUNNER_PIDS_LIMIT: '8' } }, 'runner.pidsLimit'],
    [{ env: { BERTH_RUNNER_PIDS_LIMIT: '100.5' } }, 'runner.pidsLimit'],
  ])('stops with a message naming the bad key (%#)', (sources, key) => {
    try {
      loadConfig(sources);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).key).toBe(key);
      expect((e as Error).message).toContain(key);
    }
  });

  it('maps tasks to an unprivileged host id range and limits their pids by default', () => {
    const c = loadConfig({ env: {} });
    expect(c.runner.userNamespace).toEqual({ hostIdStart: 2013265920 });
    expect(c.runner.pidsLimit).toBe(2048);
    const top = loadConfig({ env: { BERTH_RUNNER_USER_NAMESPACE_HOST_ID_START: '2147418112' } });
    expect(top.runner.userNamespace.hostIdStart + 65535).toBe(2 ** 31 - 1);
    expect(
      loadConfig({ file: file({ runner: { userNamespace: { hostIdStart: 100000 } } }) }).runner.userNamespace,
    ).toEqual({ hostIdStart: 100000 });
  });

  it('parses listen addresses', () => {
    expect(parseHostPort(':5000')).toEqual({ host: '0.0.0.0', port: 5000 });
    expect(parseHostPort('localhost:0')).toEqual({ host: 'localhost', port: 0 });
    expect(parseHostPort('[::]:5000')).toEqual({ host: '::', port: 5000 });
    expect(parseHostPort('1.2.3.4:70000')).toBeUndefined();
    expect(parseHostPort('1.2.3.4')).toBeUndefined();
  });

  it('reads outbound.allowHosts from a file or the environment, empty by default', () => {
    expect(loadConfig({ env: {} }).outbound.allowHosts).toEqual([]);
    const f = file({ outbound: { allowHosts: ['issuer.internal', '127.0.0.1:8080'] } });
    expect(loadConfig({ file: f, env: {} }).outbound.allowHosts).toEqual([
      'issuer.internal',
      '127.0.0.1:8080',
    ]);
    const env = { BERTH_OUTBOUND_ALLOW_HOSTS: 'ci.internal:80, [::1]:9000' };
    expect(loadConfig({ env }).outbound.allowHosts).toEqual(['ci.internal:80', '[::1]:9000']);
  });

  it('documents every key', () => {
    const ref = configReference().join('\n');
    for (const k of Object.keys(keys)) expect(ref).toContain(k);
  });
});
