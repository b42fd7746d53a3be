// The StorageDriver contract on MinIO, through testcontainers, wherever a Docker engine answers
// and the MinIO image is already present (nothing can be pulled from the internet here). Where
// either is missing the variant cannot run: the suite is reported as skipped with the reason
// printed, never as passed. Ceph's RGW (test/s3-rgw.test.ts) is the S3 peer that always runs.
import { randomUUID } from 'node:crypto';
import {
  CreateBucketCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { MinioContainer, type StartedMinioContainer } from '@testcontainers/minio';
import { getContainerRuntimeClient, ImageName } from 'testcontainers';
import { afterAll, beforeAll, describe } from 'vitest';
import { createS3Driver } from '../src/storage/s3.ts';
import { describeDriver } from './storage/driver-suite.ts';

const image = process.env.BERTH_TEST_MINIO_IMAGE ?? 'minio/minio:RELEASE.2025-09-07T16-13-09Z';

/** Why MinIO cannot run here, or undefined when it can. */
async function unavailable(): Promise<string | undefined> {
  let client: Awaited<ReturnType<typeof getContainerRuntimeClient>>;
  try {
    client = await getContainerRuntimeClient();
  } catch (e) {
    return `no container engine answers (${(e as Error).message.split('\n')[0]})`;
  }
  try {
    if (!(await client.image.exists(ImageName.fromString(image)))) {
      return `the engine has no ${image} image and none can be pulled here (set BERTH_TEST_MINIO_IMAGE to a local one)`;
    }
  } catch (e) {
    return `cannot list the engine's images (${(e as Error).message})`;
  }
  return undefined;
}

const reason = await unavailable();
if (reason) process.stdout.write(`\nMinIO variant SKIPPED: ${reason}\n`);

describe.skipIf(reason !== undefined)(`MinIO (${reason ? `skipped: ${reason}` : image})`, () => {
  let minio: StartedMinioContainer;
  let admin: S3Client;
  beforeAll(async () => {
    minio = await new MinioContainer(image).start();
    admin = new S3Client({
      endpoint: minio.getConnectionUrl(),
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: minio.getUsername(), secretAccessKey: minio.getPassword() },
    });
  }, 180_000);
  afterAll(async () => {
    admin?.destroy();
    await minio?.stop();
  });

  describeDriver('s3 on MinIO', async () => {
    const bucket = `t-${randomUUID().slice(0, 12)}`;
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
    const driver = createS3Driver({
      endpoint: minio.getConnectionUrl(),
      region: 'us-east-1',
      bucket,
      prefix: 'berth/',
      forcePathStyle: true,
      accessKeyId: minio.getUsername(),
      secretAccessKey: minio.getPassword(),
      partSize: 5 * 1024 * 1024,
      maxAttempts: 3,
    });
    await driver.checkBucket();
    return {
      driver,
      leftovers: async () => {
        const keys = ((await admin.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents ?? []).map(
          (o) => o.Key!,
        );
        const uploads = (
          (await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []
        ).map((u) => `multipart upload of ${u.Key}`);
        return [...keys, ...uploads];
      },
      cleanup: async () => driver.destroy(),
    };
  });
});
