// The whole app as main.ts builds it, in process: one memory storage under a registry whose pushes
// feed the runner's hooks (late-bound, as in main.ts), real auth (bootstrap admin, SigV4, role
// credentials) and a real runner with a real executor. For HTTP-level suites that need the
// runner's routes; the e2e suites start the real CLI instead.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Auth, createAuth } from '../../src/auth/index.ts';
import { keys } from '../../src/config.ts';
import { createApp } from '../../src/http/index.ts';
import { silentLogger } from '../../src/log.ts';
import { createOutbound } from '../../src/outbound.ts';
import { createRegistry, imageReader, type Registry } from '../../src/registry/index.ts';
import { createRunner, type Runner, type WebhookEndpoint } from '../../src/runner/index.ts';
import { removeBridge } from '../../src/runner/network.ts';
import { checked, createMemoryDriver } from '../../src/storage/index.ts';

export const REGION = 'us-east-1';
/** berth's default user namespace range, as a started berth uses it. */
export const DEFAULT_HOST_ID_START = keys['runner.userNamespace.hostIdStart'].default;
export const ACCOUNT = '000000000000';
export const adminPassword = 'admin-password';

export interface RunnerApp {
  readonly root: string;
  readonly registry: Registry;
  readonly auth: Auth;
  readonly runner: Runner;
  readonly app: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

/** `net` picks the suite's own bridge name prefix and 10.<net>.x.0/24, so suites never share one. */
export async function startRunnerApp(opts: {
  net: number;
  webhooks?: WebhookEndpoint[];
  /** outbound.allowHosts, for webhooks to plain http or loopback receivers. */
  allowHosts?: string[];
}): Promise<RunnerApp> {
  const root = mkdtempSync(join(tmpdir(), 'berth-runner-app-'));
  const storage = checked(createMemoryDriver());
  let runner: Runner | undefined;
  const registry = createRegistry(storage, {
    log: silentLogger,
    manifestMaxBytes: 4 * 1024 * 1024,
    deleteEnabled: true,
    uploadIdleMs: 60_000,
    events: async (e) => {
      await runner?.record(e);
    },
  });
  const auth = createAuth({
    storage,
    log: silentLogger,
    issuer: 'berth-token-service',
    service: 'berth',
    enabled: true,
    bootstrapPassword: adminPassword,
    scryptCost: 2 ** 10,
  });
  await auth.start();
  const bridgeName = `b${opts.net}-${process.pid % 10000}`;
  const started = await createRunner({
    storage,
    log: silentLogger,
    root,
    runtime: 'auto',
    region: REGION,
    accountId: ACCOUNT,
    registryHosts: [],
    bridgeName,
    bridgeSubnet: `10.${opts.net}.${process.pid % 200}.0/24`,
    logMaxBytes: 1 << 20,
    hookDebounceMs: 0,
    stoppedRetentionMs: 3_600_000,
    userNamespace: { hostIdStart: DEFAULT_HOST_ID_START },
    pidsLimit: 2048,
    images: imageReader(registry),
    webhooks: opts.webhooks ?? [],
    outbound: createOutbound({ allowHosts: opts.allowHosts ?? [] }),
    baseUrl: () => undefined,
    mintCredentials: (role, session) => auth.roleCredentials(role, session),
    decideAs: async (principal, action, resource) =>
      (await auth.authorizeAs(principal, action, resource)).effect === 'Allow',
    revokeCredentials: (stale) => auth.revokeRoleSessions((s) => stale(s.sessionName)),
  });
  runner = started;
  await started.start();
  const app = createApp({
    log: silentLogger,
    registry,
    auth,
    authOptions: { service: 'berth', basicOnRegistry: true },
    v2: { chunkMinLength: 0 },
    readiness: { check: async () => {}, draining: () => false },
    runner: started,
    runnerOptions: { region: REGION, accountId: ACCOUNT },
  });
  return {
    root,
    registry,
    auth,
    runner: started,
    app,
    async close() {
      await started.close();
      // A bridge task made the bridge and berth's chains for it; both go with the suite.
      await removeBridge(bridgeName);
      rmSync(root, { recursive: true, force: true });
    },
  };
}
