// Encryption at rest as a user meets it: the berth CLI with its defaults, a blob and a manifest
// pushed over HTTPS, then the data directory scanned for their plaintext; `berth keys` rotating
// the KEK while berth keeps serving, and retiring the old one.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from '../support/berth.ts';
import { httpsClient } from '../support/https.ts';

const root = resolve(import.meta.dirname, '..', '..');
const sha256 = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)],
  );
}

function keys(dataDir: string, ...args: string[]) {
  return new Promise<{ code: number; out: string }>((res) => {
    execFile(
      process.execPath,
      ['src/cli.ts', 'keys', ...args, '--data', dataDir],
      { cwd: root },
      (err, stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
    );
  });
}

let berth: RunningBerth;
let call: ReturnType<typeof httpsClient>;
// Recognisable plaintext: if any of it reaches the disk, a scan finds it.
const layer = Buffer.concat([Buffer.from('BERTH-PLAINTEXT-MARKER '.repeat(4000)), randomBytes(100_000)]);
const manifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: {
    mediaType: 'application/vnd.oci.image.config.v1+json',
    digest: sha256('{"marker":"CONFIG-MARKER"}'),
    size: 26,
  },
  layers: [
    { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length },
  ],
  annotations: { note: 'MANIFEST-MARKER' },
});

beforeAll(async () => {
  berth = await startBerth();
  call = httpsClient(berth.url, berth.caPath, berth.adminBasic);
});
afterAll(async () => {
  await berth?.stop();
});

async function pushAll(repo: string) {
  for (const blob of [Buffer.from('{"marker":"CONFIG-MARKER"}'), layer]) {
    const r = await call(`/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
    expect(r.status).toBe(201);
  }
  const put = await call(`/v2/${repo}/manifests/v1`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  expect(put.status).toBe(201);
}

async function pullAll(repo: string) {
  const m = await call(`/v2/${repo}/manifests/v1`);
  expect(m.body.toString()).toBe(manifest);
  const l = await call(`/v2/${repo}/blobs/${sha256(layer)}`);
  expect(l.body.equals(layer)).toBe(true);
  const range = await call(`/v2/${repo}/blobs/${sha256(layer)}`, { headers: { Range: 'bytes=90000-99999' } });
  expect(range.status).toBe(206);
  expect(range.body.equals(layer.subarray(90000, 100000))).toBe(true);
}

describe('encryption at rest, on by default', () => {
  it('keeps a generated KEK file private and writes no plaintext to the data directory', async () => {
    await pushAll('secret/app');
    await pullAll('secret/app');
    const keyFile = join(berth.dataDir, 'keys', 'kek.json');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const stored = files(join(berth.dataDir, 'storage'));
    expect(stored.length).toBeGreaterThan(5);
    for (const f of stored) {
      const raw = readFileSync(f);
      for (const marker of [
        'BERTH-PLAINTEXT-MARKER',
        'CONFIG-MARKER',
        'MANIFEST-MARKER',
        layer.subarray(120_000, 120_064),
      ]) {
        expect(raw.includes(marker), `${f} contains plaintext`).toBe(false);
      }
    }
  });

  it('rotates the KEK while serving, loses nothing, and retires the old key only when unused', async () => {
    const before = await keys(berth.dataDir, 'list');
    expect(before.code).toBe(0);
    const oldId = /^(\S+)\s+\(current\)/m.exec(before.out)![1]!;
    // Refused while it is current and in use.
    expect((await keys(berth.dataDir, 'retire', oldId)).code).not.toBe(0);
    const rotated = await keys(berth.dataDir, 'rotate');
    expect(rotated.code).toBe(0);
    expect(rotated.out).toMatch(/re-wrapped \d+ data keys/);
    // The serving berth reloads the key file; pulls keep working, and new pushes use the new key.
    await new Promise((r) => setTimeout(r, 3000));
    await pullAll('secret/app');
    await pushAll('after/rotation');
    const retired = await keys(berth.dataDir, 'retire', oldId);
    expect(retired.out).toContain(`retired ${oldId}`);
    expect(retired.code).toBe(0);
    const after = await keys(berth.dataDir, 'list');
    expect(after.out).not.toContain(oldId);
    await pullAll('secret/app');
    await pullAll('after/rotation');
  });
});

describe('key rotation under load', () => {
  it('loses nothing pushed while the KEK rotates, re-wraps and retires, across a restart', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'berth-rotate-'));
    let server = await startBerth({ dataDir });
    try {
      let c = httpsClient(server.url, server.caPath, server.adminBasic);
      const oldId = /^(\S+)\s+\(current\)/m.exec((await keys(dataDir, 'list')).out)![1]!;
      const blobs = Array.from({ length: 60 }, (_, i) =>
        Buffer.concat([Buffer.from(`blob ${i} `), randomBytes(64 * 1024 + i)]),
      );
      let next = 0;
      const pushers = Array.from({ length: 4 }, async () => {
        while (next < blobs.length) {
          const b = blobs[next++]!;
          const r = await c(`/v2/load/test/blobs/uploads/?digest=${sha256(b)}`, { method: 'POST', body: b });
          expect(r.status).toBe(201);
        }
      });
      await new Promise((r) => setTimeout(r, 200));
      const rotation = keys(dataDir, 'rotate');
      await Promise.all([...pushers, rotation]);
      expect((await rotation).code).toBe(0);
      // Objects written before the server saw the new key still use the old one: rewrap them.
      await new Promise((r) => setTimeout(r, 2500));
      expect((await keys(dataDir, 'rewrap')).code).toBe(0);
      const retired = await keys(dataDir, 'retire', oldId);
      expect(retired.out).toContain(`retired ${oldId}`);
      await server.stop();
      server = await startBerth({ dataDir });
      c = httpsClient(server.url, server.caPath, server.adminBasic);
      for (const b of blobs) {
        const r = await c(`/v2/load/test/blobs/${sha256(b)}`);
        expect(r.status).toBe(200);
        expect(r.body.equals(b)).toBe(true);
      }
    } finally {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
