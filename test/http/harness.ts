// In-process harness for the HTTP suites: the real app over a memory (or given) driver,
// exercised with app.request(). What only a socket shows is tested in test/e2e/.
import { createHash } from 'node:crypto';
import { type Auth, createAuth } from '../../src/auth/index.ts';
import { createApp } from '../../src/http/index.ts';
import { silentLogger } from '../../src/log.ts';
import { createRegistry, type Registry } from '../../src/registry/index.ts';
import { checked, createMemoryDriver, type StorageDriver } from '../../src/storage/index.ts';

export interface Harness {
  readonly storage: StorageDriver;
  readonly registry: Registry;
  readonly auth: Auth;
  request(path: string, init?: RequestInit): Promise<Response>;
  /** Pushes a blob monolithically into repo and returns its digest. */
  pushBlob(repo: string, bytes: Uint8Array | string): Promise<string>;
  pushManifest(repo: string, ref: string, manifest: object, mediaType?: string): Promise<Response>;
}

export function sha256(bytes: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function makeHarness(
  opts: {
    storage?: StorageDriver;
    manifestMaxBytes?: number;
    chunkMinLength?: number;
    deleteEnabled?: boolean;
    /** Authentication and policies on (the default in production; off here unless a suite tests them). */
    auth?: boolean;
    basicOnRegistry?: boolean;
  } = {},
): Harness {
  const storage = opts.storage ?? checked(createMemoryDriver());
  const registry = createRegistry(storage, {
    log: silentLogger,
    manifestMaxBytes: opts.manifestMaxBytes ?? 4 * 1024 * 1024,
    deleteEnabled: opts.deleteEnabled ?? true,
    uploadIdleMs: 60_000,
  });
  const auth = createAuth({
    storage,
    log: silentLogger,
    issuer: 'berth-token-service',
    service: 'berth',
    enabled: opts.auth ?? false,
    bootstrapPassword: 'admin-password',
    scryptCost: 2 ** 10,
  });
  const app = createApp({
    log: silentLogger,
    registry,
    auth,
    authOptions: { service: 'berth', basicOnRegistry: opts.basicOnRegistry ?? true },
    v2: { chunkMinLength: opts.chunkMinLength ?? 0 },
    readiness: { check: async () => {}, draining: () => false },
  });
  const request = async (path: string, init?: RequestInit) => app.request(path, init);
  return {
    storage,
    registry,
    auth,
    request,
    async pushBlob(repo, bytes) {
      const digest = sha256(bytes);
      const res = await request(`/v2/${repo}/blobs/uploads/?digest=${digest}`, {
        method: 'POST',
        body: typeof bytes === 'string' ? bytes : new Uint8Array(bytes),
      });
      if (res.status !== 201) throw new Error(`pushBlob: ${res.status} ${await res.text()}`);
      return digest;
    },
    pushManifest(repo, ref, manifest, mediaType = 'application/vnd.oci.image.manifest.v1+json') {
      return request(`/v2/${repo}/manifests/${ref}`, {
        method: 'PUT',
        headers: { 'Content-Type': mediaType },
        body: JSON.stringify(manifest),
      });
    },
  };
}

/** A minimal OCI image manifest over a config and layers already pushed. */
export function imageManifest(
  config: { digest: string; size: number },
  layers: { digest: string; size: number }[],
) {
  return {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })),
  };
}

export async function errorCode(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { errors?: { code: string }[] };
  return body.errors?.[0]?.code;
}
