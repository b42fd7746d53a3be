// berth on a real S3 implementation: Ceph's RADOS Gateway, one cluster started for this file.
// The StorageDriver contract suite, the S3 driver's own behaviour (multipart resumption, the
// abandoned-upload sweep, start-up errors), and the registry end to end with real clients.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checked } from '../src/storage/index.ts';
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
