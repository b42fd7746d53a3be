import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ConfigError } from './errors.ts';
import { loadOrCreateTls, type TlsMaterial, trustInstructions, watchTls } from './tls.ts';

const DAY_MS = 24 * 60 * 60 * 1000;
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
// skopeo is a Go program: it checks the chain with crypto/x509, as docker and podman do.
const hasSkopeo = spawnSync('skopeo', ['--version']).status === 0;
const execFileAsync = promisify(execFile);

let root: string;
let dataDir: string;
let first: TlsMaterial;
// A second, differently named pair issued from the same CA; with `first` it gives two valid pairs.
let second: TlsMaterial;
let firstStartMs: number;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'berth-tls-'));
  dataDir = join(root, 'data');
  const started = performance.now();
  first = await loadOrCreateTls({ dataDir, names: ['registry.example.test', '10.1.2.3'] });
  firstStartMs = performance.now() - started;
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;
const tlsPath = (dir: string, file: string): string => join(dir, 'tls', file);

describe('generated material', () => {
  it('first start creates the CA and server files with private modes', async () => {
    expect(firstStartMs).toBeLessThan(30_000);
    expect(first.source).toBe('generated');
    expect(first.caPath).toBe(tlsPath(dataDir, 'ca.crt'));
    expect(await modeOf(join(dataDir, 'tls'))).toBe(0o700);
    expect(await modeOf(tlsPath(dataDir, 'ca.key'))).toBe(0o600);
    expect(await modeOf(tlsPath(dataDir, 'server.key'))).toBe(0o600);
    expect(await modeOf(tlsPath(dataDir, 'ca.crt'))).toBe(0o644);
    expect(await readFile(tlsPath(dataDir, 'server.crt'), 'utf8')).toBe(first.cert);
    expect(await readFile(tlsPath(dataDir, 'server.key'), 'utf8')).toBe(first.key);
  });

  it('the server certificate names localhost, the loopback IPs, the host name and the extra names', () => {
    const server = new X509Certificate(first.cert);
    for (const host of ['localhost', 'registry.example.test', hostname().toLowerCase()]) {
      expect(server.checkHost(host, { subject: 'never' })).toBe(host);
    }
    for (const ip of ['127.0.0.1', '::1', '10.1.2.3']) expect(server.checkIP(ip)).toBeDefined();
    expect(server.checkHost('other.example.test', { subject: 'never' })).toBeUndefined();
    expect(server.checkIP('10.1.2.4')).toBeUndefined();
    expect(first.names).toEqual(expect.arrayContaining(['localhost', '127.0.0.1', '::1', '10.1.2.3']));
    expect(first.notAfter.getTime()).toBe(server.validToDate.getTime());
  });

  it('the server certificate verifies against the CA and has the extensions strict clients want', () => {
    const ca = new X509Certificate(first.caPath ? readFileSync(first.caPath, 'utf8') : '');
    const server = new X509Certificate(first.cert);
    expect(ca.ca).toBe(true);
    expect(ca.checkIssued(ca)).toBe(true);
    expect(ca.verify(ca.publicKey)).toBe(true);
    expect(server.ca).toBe(false);
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // extKeyUsage serverAuth
    // Positive serials: the top bit of the first byte is clear.
    expect(Number.parseInt(server.serialNumber.slice(0, 2), 16)).toBeLessThan(0x80);
    expect(Number.parseInt(ca.serialNumber.slice(0, 2), 16)).toBeLessThan(0x80);
    const lifetimeDays = (server.validToDate.getTime() - server.validFromDate.getTime()) / DAY_MS;
    expect(lifetimeDays).toBeLessThanOrEqual(398);
    expect(lifetimeDays).toBeGreaterThan(390);
    expect(ca.validToDate.getTime() - Date.now()).toBeGreaterThan(9 * 365 * DAY_MS);
  });

  it.skipIf(!hasOpenssl)('openssl verifies the chain strictly and checks the names', () => {
    const dir = join(dataDir, 'tls');
    const verify = execFileSync(
      'openssl',
      ['verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', 'ca.crt', 'server.crt'],
      { cwd: dir, encoding: 'utf8' },
    );
    expect(verify).toContain('server.crt: OK');
    const text = execFileSync(
      'openssl',
      ['x509', '-in', 'server.crt', '-noout', '-text', '-checkhost', 'localhost', '-checkip', '127.0.0.1'],
      { cwd: dir, encoding: 'utf8' },
    );
    expect(text).toContain('Hostname localhost does match certificate');
    expect(text).toContain('IP 127.0.0.1 does match certificate');
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(text).toContain('X509v3 Subject Key Identifier');
    expect(text).toContain('X509v3 Authority Key Identifier');
    const caText = execFileSync('openssl', ['x509', '-in', 'ca.crt', '-noout', '-text'], {
      cwd: dir,
      encoding: 'utf8',
    });
    expect(caText).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(caText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
  });

  it('a second start reuses the CA and the server certificate', async () => {
    const caBefore = await readFile(tlsPath(dataDir, 'ca.crt'), 'utf8');
    const again = await loadOrCreateTls({ dataDir, names: ['10.1.2.3', 'Registry.Example.Test'] });
    expect(new X509Certificate(again.cert).fingerprint256).toBe(
      new X509Certificate(first.cert).fingerprint256,
    );
    expect(again.key).toBe(first.key);
    expect(await readFile(tlsPath(dataDir, 'ca.crt'), 'utf8')).toBe(caBefore);
  });

  it('a new name re-issues the server certificate from the same CA', async () => {
    const caBefore = await readFile(tlsPath(dataDir, 'ca.crt'), 'utf8');
    second = await loadOrCreateTls({ dataDir, names: ['registry.example.test', '10.1.2.3', 'fd00::7'] });
    const server = new X509Certificate(second.cert);
    expect(server.fingerprint256).not.toBe(new X509Certificate(first.cert).fingerprint256);
    expect(second.key).not.toBe(first.key);
    expect(server.checkIP('fd00::7')).toBeDefined();
    expect(server.checkHost('registry.example.test', { subject: 'never' })).toBeDefined();
    expect(second.names).toContain('fd00::7');
    expect(await readFile(tlsPath(dataDir, 'ca.crt'), 'utf8')).toBe(caBefore);
    expect(server.checkIssued(new X509Certificate(caBefore))).toBe(true);
    expect(await modeOf(tlsPath(dataDir, 'server.key'))).toBe(0o600);
  });

  it('a server certificate expiring within 30 days is re-issued, the CA kept', async () => {
    const copy = join(root, 'expiring');
    await cp(dataDir, copy, { recursive: true });
    const current = new X509Certificate(await readFile(tlsPath(copy, 'server.crt'), 'utf8'));
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(current.validToDate.getTime() - 10 * DAY_MS);
      const renewed = await loadOrCreateTls({ dataDir: copy, names: ['fd00::7'] });
      const x509 = new X509Certificate(renewed.cert);
      expect(x509.fingerprint256).not.toBe(current.fingerprint256);
      expect(x509.validToDate.getTime()).toBeGreaterThan(current.validToDate.getTime());
      expect(await readFile(tlsPath(copy, 'ca.crt'), 'utf8')).toBe(
        await readFile(tlsPath(dataDir, 'ca.crt'), 'utf8'),
      );
    } finally {
      vi.useRealTimers();
    }
  });

  it('a CA certificate without its key is an error, not a silent new CA', async () => {
    const copy = join(root, 'keyless');
    await cp(dataDir, copy, { recursive: true });
    await rm(tlsPath(copy, 'ca.key'));
    const error = await loadOrCreateTls({ dataDir: copy }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe('data');
    expect((error as ConfigError).message).toContain('ca.key');
  });

  it('an extra name that is neither a DNS name nor an IP is a config error', async () => {
    const error = await loadOrCreateTls({ dataDir, names: ['bad name:5000'] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe('tls.names');
  });
});

describe('a real HTTPS server with the generated material', () => {
  let server: Server;
  let port: number;
  let ca: string;

  beforeAll(async () => {
    ca = await readFile(tlsPath(dataDir, 'ca.crt'), 'utf8');
    server = createServer({ key: second.key, cert: second.cert }, (_req, res) => {
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  // Always connect to 127.0.0.1 (the only address bound); servername is the name the client checks.
  const request = (options: { ca?: string; servername?: string }): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = get({
        host: '127.0.0.1',
        port,
        path: '/v2/',
        rejectUnauthorized: true,
        agent: false,
        ...options,
      });
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
    });

  it('answers a client that trusts only ca.crt, by IP and by the name localhost', async () => {
    expect(await request({ ca })).toBe('ok');
    expect(await request({ ca, servername: 'localhost' })).toBe('ok');
    expect(await request({ ca, servername: 'registry.example.test' })).toBe('ok');
  });

  it.skipIf(!hasSkopeo)(
    "is accepted by Go's crypto/x509 (skopeo --cert-dir) by IP and by localhost",
    async () => {
      const certDir = join(root, 'skopeo-certs');
      await cp(tlsPath(dataDir, 'ca.crt'), join(certDir, 'ca.crt'));
      for (const host of ['127.0.0.1', 'localhost']) {
        const run = execFileAsync(
          'skopeo',
          ['inspect', '--cert-dir', certDir, `docker://${host}:${port}/x:latest`],
          {
            timeout: 20_000,
          },
        );
        // The stub server answers 'ok' to everything, so skopeo fails only after TLS and HTTP worked.
        const error = (await run.then(
          () => undefined,
          (e: unknown) => e,
        )) as { stderr?: string } | undefined;
        expect(error?.stderr ?? '').not.toMatch(/x509|certificate|tls/i);
        expect(error?.stderr ?? '').toMatch(/manifest|invalid|unmarshal|parsing/i);
      }
      const untrusted = await execFileAsync('skopeo', [
        'inspect',
        `docker://127.0.0.1:${port}/x:latest`,
      ]).catch((e: { stderr?: string }) => e);
      expect((untrusted as { stderr?: string }).stderr).toMatch(
        /x509: certificate signed by unknown authority/,
      );
    },
  );

  it('is refused by clients that do not trust the CA or ask for another name', async () => {
    await expect(request({})).rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
    await expect(request({ ca, servername: 'other.example.test' })).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });
});

describe('configured material', () => {
  let dir: string;
  let certFile: string;
  let keyFile: string;

  beforeAll(async () => {
    dir = join(root, 'configured');
    await cp(join(dataDir, 'tls'), dir, { recursive: true });
    certFile = join(dir, 'tls.crt');
    keyFile = join(dir, 'tls.key');
    await writeFile(certFile, first.cert);
    await writeFile(keyFile, first.key);
  });

  // Both temp files are written first so the two renames land well within one poll interval.
  const replaceBoth = async (m: TlsMaterial): Promise<void> => {
    await writeFile(`${keyFile}.new`, m.key);
    await writeFile(`${certFile}.new`, m.cert);
    await rename(`${keyFile}.new`, keyFile);
    await rename(`${certFile}.new`, certFile);
  };

  const expectConfigError = async (p: Promise<unknown>, key: string): Promise<ConfigError> => {
    const error = await p.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).key).toBe(key);
    return error as ConfigError;
  };

  it('uses the configured pair and generates no CA', async () => {
    const emptyData = join(root, 'no-ca');
    const m = await loadOrCreateTls({ dataDir: emptyData, certFile, keyFile });
    expect(m.source).toBe('configured');
    expect(m.caPath).toBeUndefined();
    expect(m.cert).toBe(first.cert);
    expect(m.key).toBe(first.key);
    expect(m.names).toContain('registry.example.test');
    await expect(stat(join(emptyData, 'tls'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('names tls.certFile or tls.keyFile when a file is missing, unreadable or mismatched', async () => {
    const missing = join(dir, 'missing.pem');
    await expectConfigError(loadOrCreateTls({ dataDir, certFile: missing, keyFile }), 'tls.certFile');
    await expectConfigError(loadOrCreateTls({ dataDir, certFile, keyFile: missing }), 'tls.keyFile');
    await expectConfigError(loadOrCreateTls({ dataDir, certFile }), 'tls.keyFile');
    await expectConfigError(loadOrCreateTls({ dataDir, certFile: keyFile, keyFile }), 'tls.certFile');
    await expectConfigError(loadOrCreateTls({ dataDir, certFile, keyFile: certFile }), 'tls.keyFile');
    const mismatched = join(dir, 'other.key');
    await writeFile(mismatched, second.key);
    const error = await expectConfigError(
      loadOrCreateTls({ dataDir, certFile, keyFile: mismatched }),
      'tls.keyFile',
    );
    expect(error.message).toContain('does not match');
  });

  it('watchTls picks up a replaced pair and reports a mismatched one, keeping the old', async () => {
    const opts = { dataDir, certFile, keyFile, intervalMs: 40 };
    const changes: TlsMaterial[] = [];
    const errors: Error[] = [];
    const stop = watchTls(
      opts,
      (m) => changes.push(m),
      (e) => errors.push(e),
    );
    try {
      // Replace both files by rename, as cert-manager and certbot do.
      await replaceBoth(second);
      await vi.waitFor(() => expect(changes).toHaveLength(1), { timeout: 5000, interval: 20 });
      expect(changes[0]?.cert).toBe(second.cert);
      expect(changes[0]?.key).toBe(second.key);
      expect(errors).toEqual([]);

      // A certificate that does not match the key is reported once and not delivered.
      await replace(certFile, first.cert);
      await vi.waitFor(() => expect(errors).toHaveLength(1), { timeout: 5000, interval: 20 });
      expect(errors[0]).toBeInstanceOf(ConfigError);
      expect((errors[0] as ConfigError).key).toBe('tls.keyFile');
      await sleep(200);
      expect(errors).toHaveLength(1);
      expect(changes).toHaveLength(1);

      // Fixing the pair delivers it.
      await replace(keyFile, first.key);
      await vi.waitFor(() => expect(changes).toHaveLength(2), { timeout: 5000, interval: 20 });
      expect(changes[1]?.cert).toBe(first.cert);
    } finally {
      stop();
    }
    // Stopped: later changes are not seen.
    await replaceBoth(second);
    await sleep(200);
    expect(changes).toHaveLength(2);
  });
});

describe('watchTls with generated material', () => {
  it('renews the server certificate when it needs re-issuing', async () => {
    const copy = join(root, 'renew');
    await cp(dataDir, copy, { recursive: true });
    const before = await readFile(tlsPath(copy, 'server.crt'), 'utf8');
    const opts = { dataDir: copy, names: ['fd00::7'], intervalMs: 40 };
    const changes: TlsMaterial[] = [];
    const errors: Error[] = [];
    const stop = watchTls(
      opts,
      (m) => changes.push(m),
      (e) => errors.push(e),
    );
    try {
      await sleep(150);
      expect(changes).toEqual([]); // nothing to renew yet
      await rm(tlsPath(copy, 'server.crt'));
      await vi.waitFor(() => expect(changes).toHaveLength(1), { timeout: 10_000, interval: 20 });
      expect(changes[0]?.cert).not.toBe(before);
      expect(changes[0]?.caPath).toBe(tlsPath(copy, 'ca.crt'));
      expect(errors).toEqual([]);
    } finally {
      stop();
    }
  });
});

describe('trustInstructions', () => {
  it('tells docker, podman/skopeo/buildah and curl users where the CA goes', () => {
    const lines = trustInstructions('/var/lib/berth/tls/ca.crt', 'localhost:5000').join('\n');
    expect(lines).toContain('/etc/docker/certs.d/localhost:5000/ca.crt');
    expect(lines).toContain('/etc/containers/certs.d/localhost:5000/ca.crt');
    expect(lines).toContain('--cert-dir');
    expect(lines).toContain('curl --cacert /var/lib/berth/tls/ca.crt https://localhost:5000/v2/');
  });

  it('quotes paths the shell would split', () => {
    const lines = trustInstructions('/data dir/tls/ca.crt', 'localhost:5000').join('\n');
    expect(lines).toContain("--cacert '/data dir/tls/ca.crt'");
  });
});

async function replace(path: string, content: string): Promise<void> {
  const tmp = `${path}.new`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
