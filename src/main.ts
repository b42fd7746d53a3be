// Composition root: config -> storage -> registry + auth -> app -> server. The only wiring point.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { createAuth } from './auth/index.ts';
import { type Config, guardedHostPaths } from './config.ts';
import { ConfigError } from './errors.ts';
import type { RegistryEvent } from './events.ts';
import { createApp, credentialsOnlyApp, type RunningServer, startServer } from './http/index.ts';
import { createLogger, type Logger } from './log.ts';
import { createOutbound, type Outbound } from './outbound.ts';
import { createRegistry, imageReader } from './registry/index.ts';
import { createRunner, type Runner, validateWebhookEndpoints, type WebhookEndpoint } from './runner/index.ts';
import {
  checked,
  createFsDriver,
  createKeyring,
  createMemoryDriver,
  encrypted,
  type Keyring,
  mutableKeyring,
  newKek,
  parseKeyList,
  readKeyFile,
  type StorageDriver,
  writeKeyFile,
} from './storage/index.ts';
import { loadOrCreateTls, type TlsMaterial, trustInstructions, watchTls } from './tls.ts';

/** The `iss` of registry tokens: stable across restarts and host names, unlike a URL. */
const tokenIssuer = 'berth-token-service';

export interface Berth {
  readonly server: RunningServer;
  readonly log: Logger;
  /** Graceful stop: drain requests (bounded by server.shutdownTimeoutSeconds), keep uploads resumable. */
  stop(): Promise<void>;
}

interface OpenedStorage {
  /** What the registry uses: checked(encrypted(driver)) unless encryption is off. */
  readonly storage: StorageDriver;
  /** The encryption layer, for key administration; undefined when encryption is off. */
  readonly encryption?: ReturnType<typeof encrypted>;
  /** Aborts abandoned multipart uploads (S3 only). */
  readonly sweep?: (before: Date) => Promise<number>;
  /** Stops watching the key file. */
  readonly close: () => void;
}

/** The configured driver, reached (for S3, its bucket checked) before anything is served. */
async function rawDriver(config: Config, log: Logger) {
  switch (config.storage.driver) {
    case 'memory':
      return { driver: createMemoryDriver() };
    case 'filesystem':
      return { driver: createFsDriver(config.storage.filesystem.root) };
    case 's3': {
      // Loaded on demand: the AWS SDK is large, and only S3 deployments need it.
      const { createS3Driver } = await import('./storage/s3.ts');
      // Read workers only pay off when there is decryption to move off the serving thread.
      const s3 = createS3Driver({
        ...config.storage.s3,
        readWorkers: config.encryption.enabled ? config.storage.s3.readWorkers : 0,
      });
      await s3.checkBucket();
      log.info(
        { bucket: config.storage.s3.bucket, endpoint: config.storage.s3.endpoint ?? 'AWS' },
        'S3 storage ready',
      );
      return { driver: s3, sweep: (before: Date) => s3.sweepUploads(before) };
    }
  }
}

/**
 * The KEKs: inline from encryption.keys, else the key file, created (0600) with a fresh key on
 * first start. A key file is re-read when it changes, so `berth keys rotate` run beside a
 * serving berth takes effect without a restart.
 */
function loadKeys(config: Config, log: Logger): { ring: Keyring; close: () => void } {
  const { keys, keyFile } = config.encryption;
  if (keys.length > 0) {
    try {
      return { ring: parseKeyList(keys), close: () => {} };
    } catch (e) {
      throw new ConfigError('encryption.keys', (e as Error).message);
    }
  }
  if (!existsSync(keyFile)) {
    writeKeyFile(keyFile, createKeyring([newKek()]));
    log.warn(
      { keyFile },
      'generated a new key-encryption key: back this file up (see README); without it the data cannot be read',
    );
  }
  let ring: ReturnType<typeof mutableKeyring>;
  try {
    ring = mutableKeyring(readKeyFile(keyFile));
  } catch (e) {
    throw new ConfigError('encryption.keyFile', `cannot read ${keyFile}: ${(e as Error).message}`);
  }
  let seen = statSync(keyFile).mtimeMs;
  const timer = setInterval(() => {
    try {
      const m = statSync(keyFile).mtimeMs;
      if (m === seen) return;
      seen = m;
      ring.replace(readKeyFile(keyFile));
      log.info({ keyFile, current: ring.current.id, keys: ring.ids() }, 'key file reloaded');
    } catch (e) {
      log.error({ err: (e as Error).message, keyFile }, 'key file not reloaded; keeping the keys in use');
    }
  }, 2000);
  timer.unref();
  return { ring, close: () => clearInterval(timer) };
}

export async function openStorage(config: Config, log: Logger): Promise<OpenedStorage> {
  const { driver, sweep } = await rawDriver(config, log);
  if (!config.encryption.enabled) {
    log.warn('encryption at rest is off (encryption.enabled=false)');
    return { storage: checked(driver), ...(sweep && { sweep }), close: () => {} };
  }
  const { ring, close } = loadKeys(config, log);
  const layer = encrypted(driver, { keyring: ring, allowPlaintext: config.encryption.allowPlaintext });
  return { storage: checked(layer), encryption: layer, ...(sweep && { sweep }), close };
}

function loadWebhooks(file: string | undefined, outbound: Outbound): WebhookEndpoint[] {
  if (file === undefined) return [];
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError('runner.webhooksFile', `cannot read ${file}: ${(e as Error).message}`);
  }
  return validateWebhookEndpoints(value, 'runner.webhooksFile', outbound);
}

export async function start(config: Config, log: Logger = createLogger(config.log.level)): Promise<Berth> {
  // Requests to URLs others chose (OIDC issuers, webhooks) follow these rules; see outbound.ts.
  const outbound = createOutbound({ allowHosts: config.outbound.allowHosts });
  const opened = await openStorage(config, log);
  const { storage, sweep } = opened;
  // Late-bound: the runner (which journals the events for its hooks) is built after the registry.
  let eventSink: ((e: RegistryEvent) => Promise<void>) | undefined;
  const registry = createRegistry(storage, {
    log: log.child({ module: 'registry' }),
    manifestMaxBytes: config.registry.manifestMaxBytes,
    deleteEnabled: config.registry.deleteEnabled,
    uploadIdleMs: config.registry.uploadIdleSeconds * 1000,
    events: (e) => eventSink?.(e),
  });

  const auth = await createAuth({
    storage,
    log: log.child({ module: 'auth' }),
    issuer: tokenIssuer,
    service: config.auth.service,
    tokenTtlSeconds: config.auth.tokenTtlSeconds,
    enabled: config.auth.enabled,
    oidcUsername: config.auth.oidcUsername,
    outbound,
    ...(config.auth.adminPassword !== undefined && { bootstrapPassword: config.auth.adminPassword }),
  });
  const { bootstrapPassword } = await auth.start();

  // Where containers reach berth (task role credentials); set once the server listens.
  let runnerBase: string | undefined;
  let runner: Runner | undefined;
  if (config.runner.enabled) {
    runner = await createRunner({
      storage,
      log: log.child({ module: 'runner' }),
      root: config.runner.root,
      runtime: config.runner.runtime,
      region: config.runner.region,
      accountId: config.runner.accountId,
      registryHosts: [...config.runner.registryHosts, ...config.tls.names],
      bridgeName: config.runner.bridgeName,
      bridgeSubnet: config.runner.bridgeSubnet,
      logMaxBytes: config.runner.logMaxBytes,
      hookDebounceMs: config.runner.hookDebounceMs,
      stoppedRetentionMs: config.runner.stoppedTaskRetentionMinutes * 60_000,
      userNamespace: config.runner.userNamespace,
      pidsLimit: config.runner.pidsLimit,
      images: imageReader(registry),
      webhooks: loadWebhooks(config.runner.webhooksFile, outbound),
      outbound,
      baseUrl: () => runnerBase,
      // Hooks act as their rule's role, and execution roles pull images, long after any request.
      decideAs: async (principal, action, resource) =>
        (await auth.authorizeAs(principal, action, resource)).effect === 'Allow',
      ...(config.auth.enabled && {
        mintCredentials: (role: string, session: string) => auth.roleCredentials(role, session),
        revokeCredentials: (stale: (session: string) => boolean) =>
          auth.revokeRoleSessions((s) => stale(s.sessionName)),
      }),
      hostAccess: {
        hostPathAllowList: config.runner.hostPathAllowList,
        allowHostNetwork: config.runner.allowHostNetwork,
        guarded: guardedHostPaths(config),
      },
      // Plain HTTP on the bridge's address, as ECS's agent serves 169.254.170.2: the SDKs accept
      // http for that address only, and the traffic never leaves the host.
      serveCredentials: async (host) => {
        const credentialsLog = log.child({ module: 'task-credentials' });
        const server = await startServer({
          app: credentialsOnlyApp(
            { taskCredentials: (task, authorization) => runner!.taskCredentials(task, authorization) },
            credentialsLog,
          ),
          host,
          port: 0,
          log: credentialsLog,
        });
        return { port: server.port, close: () => server.close(5000) };
      },
    });
    const r = runner;
    eventSink = (e) => r.record(e);
    await runner.start();
  }

  let draining = false;
  const app = createApp({
    log,
    registry,
    auth,
    authOptions: { service: config.auth.service, basicOnRegistry: config.auth.basicOnRegistry },
    v2: { chunkMinLength: config.registry.chunkMinLength },
    ...(runner && { runner }),
    runnerOptions: { region: config.runner.region, accountId: config.runner.accountId },
    trustProxy: config.server.trustProxy,
    scheme: config.tls.enabled ? 'https' : 'http',
    readiness: {
      check: async () => {
        await storage.list('/');
      },
      draining: () => draining,
    },
  });

  const tlsOptions = {
    dataDir: config.data,
    certFile: config.tls.certFile,
    keyFile: config.tls.keyFile,
    names: config.tls.names,
  };
  let tls: TlsMaterial | undefined;
  if (config.tls.enabled) tls = await loadOrCreateTls(tlsOptions);

  const server = await startServer({ app, host: config.listen.host, port: config.listen.port, log, tls });
  const scheme = server.secure ? 'https' : 'http';
  const publicHost = ['0.0.0.0', '[::]'].includes(config.listen.host)
    ? 'localhost'
    : server.address.split(':')[0];
  const hostPort = `${publicHost}:${server.port}`;
  // Host-network tasks reach berth on the loopback; 127.0.0.1 is always in the generated certificate.
  runnerBase = `${scheme}://127.0.0.1:${server.port}`;
  // Trust instructions first: whoever waits for the 'listening' line has them by then.
  if (tls?.caPath) {
    process.stderr.write(
      [
        '',
        `berth is serving https://${hostPort} (also as ${hostname()} and the other names in its certificate).`,
        ...trustInstructions(tls.caPath, hostPort),
        '',
      ].join('\n'),
    );
  } else if (!tls) {
    log.warn('TLS is off (tls.enabled=false): serve berth only behind a TLS-terminating proxy');
  }
  if (bootstrapPassword !== undefined) {
    // Shown this once: it is stored only as a scrypt hash.
    process.stderr.write(
      [
        'Created the administrator account. Its password is shown this once:',
        `  user: admin   password: ${bootstrapPassword}`,
        `  docker login ${hostPort} -u admin`,
        'Set auth.adminPassword (or BERTH_ADMIN_PASSWORD) before the first start to choose it instead.',
        '',
      ].join('\n'),
    );
  }
  if (!config.auth.enabled) {
    log.warn('authentication is OFF (auth.enabled=false): anyone who can reach berth may do anything');
  }

  log.info(
    {
      address: server.address,
      url: `${scheme}://${server.address}`,
      caPath: tls?.caPath,
      storage: config.storage.driver,
      data: config.data,
    },
    'listening',
  );
  const stopWatching = config.tls.enabled
    ? watchTls(
        tlsOptions,
        (m) => {
          server.setCertificate(m);
          log.info({ notAfter: m.notAfter, names: m.names }, 'TLS certificate reloaded');
        },
        (e) => log.error({ err: e.message }, 'TLS certificate not reloaded'),
      )
    : () => {};

  const purgeEvery = 60 * 60 * 1000;
  const purge = setInterval(() => {
    const cutoff = new Date(Date.now() - config.registry.uploadMaxAgeHours * 3600 * 1000);
    registry.purgeUploads(cutoff).then(
      (n) => n > 0 && log.info({ purged: n }, 'purged abandoned uploads'),
      (e) => log.error({ err: e }, 'purging uploads failed'),
    );
    // Multipart uploads nobody completed or aborted (a crash mid-write) cost storage until aborted.
    sweep?.(cutoff).then(
      (n) => n > 0 && log.info({ aborted: n }, 'aborted abandoned multipart uploads'),
      (e) => log.error({ err: e }, 'sweeping multipart uploads failed'),
    );
  }, purgeEvery);
  purge.unref();

  let stopping: Promise<void> | undefined;
  return {
    server,
    log,
    stop() {
      stopping ??= (async () => {
        draining = true;
        clearInterval(purge);
        stopWatching();
        log.info({ timeoutSeconds: config.server.shutdownTimeoutSeconds }, 'shutting down');
        await server.close(config.server.shutdownTimeoutSeconds * 1000);
        // Containers keep running: the next start adopts them.
        await runner?.close();
        await registry.close();
        opened.close();
        log.info('stopped');
      })();
      return stopping;
    },
  };
}

/** `berth keys ...`: list, rotate, retire ID, encrypt-plaintext. Returns the exit code. */
export async function keysCommand(
  config: Config,
  args: readonly string[],
  out: (line: string) => void,
): Promise<number> {
  const log = createLogger('warn');
  if (!config.encryption.enabled) {
    out('encryption is off (encryption.enabled=false): there are no keys to manage');
    return 2;
  }
  const fromFile = config.encryption.keys.length === 0;
  const [sub, arg] = args;
  const opened = await openStorage(config, log);
  try {
    const layer = opened.encryption!;
    switch (sub) {
      case 'list': {
        const ring = fromFile ? readKeyFile(config.encryption.keyFile) : parseKeyList(config.encryption.keys);
        const used = await layer.keysInUse();
        for (const id of ring.ids()) {
          out(`${id}${id === ring.current.id ? '  (current)' : ''}  used by ${used[id] ?? 0} objects`);
        }
        for (const [id, n] of Object.entries(used))
          if (!ring.get(id)) out(`${id}  MISSING from the keyring, used by ${n} objects`);
        return 0;
      }
      case 'rotate': {
        if (!fromFile) {
          out(
            'keys come from encryption.keys: add a new id:base64 key at its end, restart, then run berth keys rewrap',
          );
          return 2;
        }
        const old = readKeyFile(config.encryption.keyFile);
        const next = newKek();
        writeKeyFile(
          config.encryption.keyFile,
          createKeyring([...old.ids().map((id) => old.get(id)!), next], next.id),
        );
        out(`added key ${next.id} as current; a running berth picks it up within seconds`);
        (opened as { close: () => void }).close();
        return rewrap(config, log, out);
      }
      case 'rewrap':
        return rewrap(config, log, out);
      case 'retire': {
        if (!arg) {
          out('usage: berth keys retire KEY_ID');
          return 2;
        }
        if (!fromFile) {
          out('keys come from encryption.keys: remove the key there');
          return 2;
        }
        const ring = readKeyFile(config.encryption.keyFile);
        if (!ring.get(arg)) {
          out(`no key ${arg} in ${config.encryption.keyFile}`);
          return 2;
        }
        if (ring.current.id === arg) {
          out(`${arg} is the current key: rotate first`);
          return 2;
        }
        const used = (await layer.keysInUse())[arg] ?? 0;
        if (used > 0) {
          out(`${arg} still wraps ${used} data keys: run berth keys rewrap, then retire it`);
          return 1;
        }
        const rest = ring.ids().filter((id) => id !== arg);
        writeKeyFile(
          config.encryption.keyFile,
          createKeyring(
            rest.map((id) => ring.get(id)!),
            ring.current.id,
          ),
        );
        out(`retired ${arg}`);
        return 0;
      }
      case 'encrypt-plaintext': {
        const migrating = await openStorage(
          { ...config, encryption: { ...config.encryption, allowPlaintext: true } },
          log,
        );
        try {
          out(`encrypted ${await migrating.encryption!.encryptPlaintext()} plaintext objects`);
        } finally {
          migrating.close();
        }
        return 0;
      }
      default:
        out('usage: berth keys list | rotate | rewrap | retire KEY_ID | encrypt-plaintext');
        return 2;
    }
  } finally {
    opened.close();
  }
}

async function rewrap(config: Config, log: Logger, out: (line: string) => void): Promise<number> {
  const opened = await openStorage(config, log);
  try {
    const { rewrapped, byKey } = await opened.encryption!.rewrapAll();
    out(
      `re-wrapped ${rewrapped} data keys under the current key (content untouched); before: ${JSON.stringify(byKey)}`,
    );
    return 0;
  } finally {
    opened.close();
  }
}
