// The read workers themselves run against a real S3 (test/s3-rgw.test.ts); here, the part that
// must not lose information crossing threads: errors come back as the same typed errors.
import { describe, expect, it } from 'vitest';
import { InvalidOffsetError, PathNotFoundError, StorageError } from './driver.ts';
import { createS3ReadWorkers, reviveError } from './s3-read-workers.ts';

describe('read worker errors', () => {
  it('come back as the typed storage errors they were, with their message, driver and path', () => {
    const missing = reviveError({
      name: 'PathNotFoundError',
      message: 's3: path not found: /.objects/ab',
      driver: 's3',
      path: '/.objects/ab',
    });
    expect(missing).toBeInstanceOf(PathNotFoundError);
    expect(missing.message).toBe('s3: path not found: /.objects/ab');

    const short = reviveError({
      name: 'InvalidOffsetError',
      message: 's3: invalid offset 70000: /.objects/ab',
      driver: 's3',
      path: '/.objects/ab',
      offset: 70_000,
    });
    expect(short).toBeInstanceOf(InvalidOffsetError);
    expect((short as InvalidOffsetError).offset).toBe(70_000);

    const tampered = reviveError({
      name: 'StorageError',
      message: 'encrypted: segment 3 failed authentication: the stored data was altered: /blobs/x',
      driver: 'encrypted',
      path: '/blobs/x',
    });
    expect(tampered).toBeInstanceOf(StorageError);
    expect(tampered).not.toBeInstanceOf(PathNotFoundError);
    expect(tampered.message).toBe(
      'encrypted: segment 3 failed authentication: the stored data was altered: /blobs/x',
    );
    expect(tampered.driver).toBe('encrypted');
    expect(tampered.path).toBe('/blobs/x');
  });
});

describe('createS3ReadWorkers', () => {
  it('refuses a pool without workers', () => {
    const options = {
      region: 'us-east-1',
      bucket: 'b',
      prefix: '',
      forcePathStyle: true,
      partSize: 5 << 20,
      maxAttempts: 1,
    };
    expect(() => createS3ReadWorkers(options, { workers: 0 })).toThrow(RangeError);
    expect(() => createS3ReadWorkers(options, { workers: 1.5 })).toThrow(RangeError);
  });
});
