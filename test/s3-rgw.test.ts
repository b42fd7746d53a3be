// berth on a real S3 implementation: Ceph's RADOS Gateway, one cluster started for this file.
// The StorageDriver contract suite, the S3 driver's own behaviour (multipart resumption, the
// abandoned-upload sweep, start-up errors), and the registry end to end with real clients.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checked, createKeyring, encrypted, newKek, StorageError } from '../src/storage/index.ts';
import { createS3Driver, type S3Options } from '../src/storage/s3.ts';
import { describeDriver } from './storage/driver-suite.ts';
import { type RunningBerth, startBerth } from './support/berth.ts';
import { containerTools } from './support/containers.ts';
import { httpsClient } from './support/https.ts';
import { type Rgw, startRgw } from './support/rgw.ts';

let rgw: Rgw;
let admin: S3Client;
const MiB = 1024 * 1024;

beforeAll(async () => {
  rgw = await startRgw();
  admin = new S3Client({
    endpoint: rgw.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}, 180_000);

afterAll(async () => {
  admin?.destroy();
  await rgw?.stop();
});

async function newBucket(): Promise<string> {
  const bucket = `t-${randomUUID().slice(0, 12)}`;
  await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  return bucket;
}

function options(bucket: string, extra: Partial<S3Options> = {}): S3Options {
  return {
    endpoint: rgw.endpoint,
    region: rgw.region,
    bucket,
    prefix: 'berth/',
    forcePathStyle: true,
    accessKeyId: rgw.accessKeyId,
    secretAccessKey: rgw.secretAccessKey,
    partSize: 5 * MiB,
    maxAttempts: 3,
    ...extra,
  };
}

/** Every key and every open multipart upload in a bucket. */
async function contents(bucket: string): Promise<string[]> {
  const keys = ((await admin.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents ?? []).map(
    (o) => o.Key!,
  );
  const uploads = ((await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).map(
    (u) => `multipart upload of ${u.Key}`,
  );
  return [...keys, ...uploads];
}

describeDriver('s3 on Ceph RGW', async () => {
  const bucket = await newBucket();
  const driver = createS3Driver(options(bucket));
  await driver.checkBucket();
  return { driver, leftovers: () => contents(bucket), cleanup: async () => driver.destroy() };
});

describe('S3 driver specifics', () => {
  it('spreads a write over multipart parts and resumes it after close', async () => {
    const bucket = await newBucket();
    const d = checked(createS3Driver(options(bucket)));
    const data = randomBytes(17 * MiB + 5);
    const first = await d.writer('/uploads/x/data');
    for (let off = 0; off < 12 * MiB; off += 256 * 1024)
      await first.write(data.subarray(off, off + 256 * 1024));
    await first.close();
    // Two 5 MiB parts went out; the 2 MiB tail waits as a hidden object.
    const pending = await contents(bucket);
    expect(pending).toContain('berth/.pending/uploads/x/data');
    expect(pending).toContain('multipart upload of berth/uploads/x/data');
    await expect(d.stat('/uploads/x/data')).rejects.toThrow(/not found/);
    const second = await d.writer('/uploads/x/data', { append: true });
    expect(second.size).toBe(12 * MiB);
    await second.write(data.subarray(12 * MiB));
    await second.commit();
    const back = createHash('sha256');
    for await (const c of await d.reader('/uploads/x/data')) back.update(c as Buffer);
    expect(back.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(await contents(bucket)).toEqual(['berth/uploads/x/data']);
    await d.delete('/uploads');
    expect(await contents(bucket)).toEqual([]);
  });

  it('streams parts as they arrive when told the size, and copes with a hint that was too large', async () => {
    const bucket = await newBucket();
    const d = checked(createS3Driver(options(bucket)));
    const data = randomBytes(11 * MiB + 7);
    const write = async (path: string, hint: number) => {
      const w = await d.writer(path);
      w.expect?.(hint);
      for (let off = 0; off < data.length; off += 100_000) await w.write(data.subarray(off, off + 100_000));
      await w.commit();
      const back = createHash('sha256');
      for await (const c of await d.reader(path)) back.update(c as Buffer);
      expect(back.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    };
    await write('/exact', data.length);
    // The client announced more than it sent: the speculative part is stopped, the rest sent as it is.
    await write('/short', data.length + 4 * MiB);
    expect(await contents(bucket)).toEqual(['berth/exact', 'berth/short']);
  });

  it('deletes a file it is told is whole with one DeleteObject; an absent one is no error', async () => {
    const bucket = await newBucket();
    const d = checked(createS3Driver(options(bucket)));
    await d.putContent('/a/file', Buffer.from('x'));
    await d.putContent('/a/other', Buffer.from('y'));
    await d.deleteFile!('/a/file');
    expect(await contents(bucket)).toEqual(['berth/a/other']);
    await d.deleteFile!('/a/file');
    // Encrypted storage deletes its records and content objects that way: moving and deleting a
    // sealed file leaves neither behind.
    const e = checked(encrypted(createS3Driver(options(bucket)), { keyring: createKeyring([newKek()]) }));
    const w = await e.writer('/b/src');
    await w.write(randomBytes(MiB));
    await w.commit();
    const objects = (await contents(bucket)).filter((k) => k !== 'berth/a/other');
    expect(objects).toHaveLength(2); // the record and its content object
    await e.move('/b/src', '/b/dest');
    expect((await contents(bucket)).filter((k) => k.startsWith('berth/b/'))).toEqual(['berth/b/dest']);
    await e.delete('/b/dest');
    expect(await contents(bucket)).toEqual(['berth/a/other']);
  });

  it('signs blob reads itself (RGW checks the signature), and reads through the SDK when that fails', async () => {
    const bucket = await newBucket();
    const data = randomBytes(3 * MiB + 5);
    const seeded = createS3Driver(options(bucket));
    await seeded.putContent('/blob', data);
    seeded.destroy();
    // A proxy in front of RGW that notes who sent each request (the SDK names itself in
    // amz-sdk-invocation-id) and, when told, answers one request 503 itself.
    const seen: string[] = [];
    let failNext = false;
    const target = new URL(rgw.endpoint);
    const proxy = createServer((req, res) => {
      seen.push(`${req.method} ${req.headers['amz-sdk-invocation-id'] ? 'sdk' : 'signed'}`);
      if (failNext) {
        failNext = false;
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end('<Error><Code>SlowDown</Code><Message>slow down</Message></Error>');
        return;
      }
      const out = request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode!, up.headers);
          up.pipe(res);
        },
      );
      req.pipe(out);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const d = createS3Driver({
      ...options(bucket),
      endpoint: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    });
    const read = async (offset: number, length: number) => {
      const parts: Buffer[] = [];
      await d.copyTo('/blob', offset, length, async (c) => {
        parts.push(Buffer.from(c));
      });
      return Buffer.concat(parts);
    };
    try {
      expect((await read(0, data.length)).equals(data)).toBe(true);
      expect((await read(MiB + 1, 1000)).equals(data.subarray(MiB + 1, MiB + 1001))).toBe(true);
      expect(seen).toEqual(['GET signed', 'GET signed']); // one request per read, accepted as signed
      seen.length = 0;
      failNext = true;
      expect((await read(7, MiB)).equals(data.subarray(7, 7 + MiB))).toBe(true);
      expect(seen).toEqual(['GET signed', 'GET sdk']);
      seen.length = 0;
      // Errors come from the SDK's answer, as for every other request.
      await expect(d.copyTo('/absent', 0, 10, async () => {})).rejects.toThrow(/not found/i);
      expect(seen).toEqual(['GET signed', 'GET sdk']);
    } finally {
      d.destroy();
      await new Promise((r) => proxy.close(r));
    }
  });

  it('aborts multipart uploads abandoned before the cutoff', async () => {
    const bucket = await newBucket();
    const d = createS3Driver(options(bucket));
    await admin.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'berth/crashed/writer' }));
    expect(await d.sweepUploads(new Date(Date.now() - 3_600_000))).toBe(0);
    expect(await d.sweepUploads(new Date(Date.now() + 60_000))).toBe(1);
    expect(await contents(bucket)).toEqual([]);
  });

  it('says which part is wrong when the bucket is missing, the credentials are bad or the endpoint is unreachable', async () => {
    const bucket = await newBucket();
    await expect(createS3Driver(options('no-such-bucket')).checkBucket()).rejects.toThrow(
      /bucket no-such-bucket does not exist/,
    );
    await expect(createS3Driver(options(bucket, { secretAccessKey: 'wrong' })).checkBucket()).rejects.toThrow(
      /credentials were refused/,
    );
    await expect(
      createS3Driver(options(bucket, { endpoint: 'http://127.0.0.1:9', maxAttempts: 1 })).checkBucket(),
    ).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:9/);
  });
});

// Encrypted content read and opened on worker threads (storage.s3.readWorkers): the contract
// suite with segments small enough that every read crosses thousands of them, then what the
// workers must keep of the main-thread path: tamper and truncation errors, after good bytes only.
describeDriver('encrypted(s3 on Ceph RGW) with read workers', async () => {
  const bucket = await newBucket();
  const s3 = createS3Driver(options(bucket, { readWorkers: 2 }));
  return {
    driver: encrypted(s3, { keyring: createKeyring([newKek()]), segmentBytes: 4096 + 7 }),
    leftovers: () => contents(bucket),
    cleanup: async () => s3.destroy(),
  };
});

describe('encrypted reads through S3 read workers', () => {
  const segmentBytes = 64 * 1024;
  async function setup() {
    const bucket = await newBucket();
    const s3 = createS3Driver(options(bucket, { readWorkers: 1 }));
    let offloaded = 0;
    const copySealed = s3.copySealed!;
    s3.copySealed = (...args) => {
      offloaded++;
      return copySealed(...args);
    };
    const d = checked(encrypted(s3, { keyring: createKeyring([newKek()]), segmentBytes }));
    const data = randomBytes(3 * MiB + 12_345);
    await d.putContent('/blob', data);
    const [objectKey] = (await contents(bucket)).filter((k) => k.startsWith('berth/.objects/'));
    const sealed = Buffer.from(
      await (
        await admin.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey! }))
      ).Body!.transformToByteArray(),
    );
    const replaceObject = (body: Buffer) =>
      admin.send(new PutObjectCommand({ Bucket: bucket, Key: objectKey!, Body: body }));
    /** Everything the sink got, and how the copy ended. */
    const copy = async (offset: number, length: number) => {
      const got: Buffer[] = [];
      const outcome = await d
        .copyTo('/blob', offset, length, async (c) => {
          got.push(Buffer.from(c));
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      return { got: Buffer.concat(got), outcome };
    };
    return { s3, d, data, sealed, replaceObject, copy, offloaded: () => offloaded };
  }

  it('serves whole blobs and ranges through the workers, opening only what the range touches', async () => {
    const t = await setup();
    try {
      const whole = await t.copy(0, t.data.length);
      expect(whole.outcome).toBeUndefined();
      expect(whole.got.equals(t.data)).toBe(true);
      const range = await t.copy(segmentBytes * 10 + 5, segmentBytes * 3);
      expect(range.outcome).toBeUndefined();
      expect(range.got.equals(t.data.subarray(segmentBytes * 10 + 5, segmentBytes * 13 + 5))).toBe(true);
      // The stream reader goes the same way.
      const chunks: Buffer[] = [];
      for await (const c of await t.d.reader('/blob', 1_000_000)) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).equals(t.data.subarray(1_000_000))).toBe(true);
      expect(t.offloaded()).toBe(3);
    } finally {
      t.s3.destroy();
    }
  });

  it('refuses a tampered segment, serving only the verified bytes before it', async () => {
    const t = await setup();
    try {
      const bad = Buffer.from(t.sealed);
      const at = (segmentBytes + 16) * 20 + 100; // inside segment 20
      bad[at] = bad[at]! ^ 1;
      await t.replaceObject(bad);
      const r = await t.copy(0, t.data.length);
      expect(r.outcome).toBeInstanceOf(StorageError);
      expect(String(r.outcome)).toMatch(/segment 20 failed authentication/);
      expect(r.got.length).toBeLessThanOrEqual(20 * segmentBytes);
      expect(r.got.equals(t.data.subarray(0, r.got.length))).toBe(true);
      // A range that avoids the segment is still served.
      const before = await t.copy(0, 5 * segmentBytes);
      expect(before.outcome).toBeUndefined();
      expect(before.got.equals(t.data.subarray(0, 5 * segmentBytes))).toBe(true);
    } finally {
      t.s3.destroy();
    }
  });

  it('refuses truncated content', async () => {
    const t = await setup();
    try {
      await t.replaceObject(t.sealed.subarray(0, t.sealed.length - 1000));
      const r = await t.copy(0, t.data.length);
      expect(r.outcome).toBeInstanceOf(StorageError);
      expect(r.got.equals(t.data.subarray(0, r.got.length))).toBe(true);
      expect(r.got.length).toBeLessThan(t.data.length);
    } finally {
      t.s3.destroy();
    }
  });

  it('stops a read when the sink fails, and keeps serving the next ones', async () => {
    const t = await setup();
    try {
      for (let i = 0; i < 3; i++) {
        let calls = 0;
        await expect(
          t.d.copyTo('/blob', 0, t.data.length, async () => {
            if (++calls === 2) throw new Error('client went away');
          }),
        ).rejects.toThrow(/client went away/);
      }
      // Several at once share the worker; each gets its own bytes.
      const all = await Promise.all([0, 1, 2, 3].map((i) => t.copy(i * 1000, t.data.length - i * 1000)));
      all.forEach((r, i) => {
        expect(r.outcome).toBeUndefined();
        expect(r.got.equals(t.data.subarray(i * 1000))).toBe(true);
      });
    } finally {
      t.s3.destroy();
    }
  });
});

describe('the registry on RGW', () => {
  let berth: RunningBerth;
  let bucket: string;
  const s3env = () => ({
    BERTH_STORAGE_DRIVER: 's3',
    BERTH_STORAGE_S3_ENDPOINT: rgw.endpoint,
    BERTH_STORAGE_S3_BUCKET: bucket,
    BERTH_STORAGE_S3_PREFIX: 'registry',
    BERTH_STORAGE_S3_ACCESS_KEY_ID: rgw.accessKeyId,
    BERTH_STORAGE_S3_SECRET_ACCESS_KEY: rgw.secretAccessKey,
    BERTH_STORAGE_S3_PART_SIZE: String(5 * MiB),
  });

  beforeAll(async () => {
    bucket = await newBucket();
    berth = await startBerth({ env: s3env() });
  }, 60_000);
  afterAll(async () => {
    await berth?.stop();
  });

  it('stores no plaintext in the bucket (encryption is on by default)', async () => {
    const call = httpsClient(berth.url, berth.caPath, berth.adminBasic);
    const marker = Buffer.from('RGW-PLAINTEXT-MARKER '.repeat(10_000));
    const digest = `sha256:${createHash('sha256').update(marker).digest('hex')}`;
    expect(
      (await call(`/v2/scan/me/blobs/uploads/?digest=${digest}`, { method: 'POST', body: marker })).status,
    ).toBe(201);
    expect((await call(`/v2/scan/me/blobs/${digest}`)).body.equals(marker)).toBe(true);
    let scanned = 0;
    for (const k of await contents(bucket)) {
      if (k.startsWith('multipart upload')) continue;
      const o = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: k }));
      const raw = Buffer.from(await o.Body!.transformToByteArray());
      expect(raw.includes('RGW-PLAINTEXT-MARKER'), k).toBe(false);
      scanned++;
    }
    expect(scanned).toBeGreaterThan(3);
  });

  it('stops at start, naming the problem, when the bucket does not exist', async () => {
    await expect(
      startBerth({ env: { ...s3env(), BERTH_STORAGE_S3_BUCKET: 'missing-bucket' } }),
    ).rejects.toThrow(/cannot start: s3: bucket missing-bucket does not exist/);
  });

  it('takes pushes from buildah and skopeo and serves pulls to podman, with blobs in the bucket', async () => {
    const t = containerTools(berth.caPath);
    try {
      await t.login(berth.hostPort, berth.admin.username, berth.admin.password);
      await t.buildBusybox('localhost/s3:1');
      await t.buildah(
        'push',
        '--cert-dir',
        t.certDir,
        'localhost/s3:1',
        `docker://${berth.hostPort}/s3/bb:1`,
      );
      await t.skopeo(
        'copy',
        '--src-cert-dir',
        t.certDir,
        '--dest-cert-dir',
        t.certDir,
        `docker://${berth.hostPort}/s3/bb:1`,
        `docker://${berth.hostPort}/s3/copy:1`,
      );
      await t.podman('rmi', 'localhost/s3:1');
      await t.podman('pull', '-q', '--cert-dir', t.certDir, `${berth.hostPort}/s3/copy:1`);
      const [img] = JSON.parse((await t.podman('image', 'inspect', `${berth.hostPort}/s3/copy:1`)).stdout);
      expect(img.Config.Cmd).toEqual(['/bin/busybox', 'echo', 'hello from berth']);
      const keys = await contents(bucket);
      expect(keys.some((k) => k.startsWith('registry/blobs/sha256/'))).toBe(true);
      expect(keys).toContain('registry/repositories/s3/copy/_manifests/tags/1/current/link');
      expect(keys.some((k) => k.startsWith('registry/.objects/'))).toBe(true);
      expect(keys.filter((k) => k.startsWith('multipart upload'))).toEqual([]);
    } finally {
      await t.cleanup();
    }
  });
});
