// Composition root: config -> storage -> registry -> app -> server. The only wiring point.
import { hostname } from 'node:os';
import type { Config } from './config.ts';
import { createApp, type RunningServer, startServer } from './http/index.ts';
import { createLogger, type Logger } from './log.ts';
import { createRegistry } from './registry/index.ts';
import { checked, createFsDriver, createMemoryDriver, type StorageDriver } from './storage/index.ts';
import { loadOrCreateTls, type TlsMaterial, trustInstructions, watchTls } from './tls.ts';

export interface Berth {
  readonly server: RunningServer;
  readonly log: Logger;
  /** Graceful stop: drain requests (bounded by server.shutdownTimeoutSeconds), keep uploads resumable. */
  stop(): Promise<void>;
}

/** The configured driver, checked (and for S3, found reachable) before anything is served. */
async function createStorage(
  config: Config,
  log: Logger,
): Promise<{ storage: StorageDriver; sweep?: (before: Date) => Promise<number> }> {
  switch (config.storage.driver) {
    case 'memory':
      return { storage: checked(createMemoryDriver()) };
    case 'filesystem':
      return { storage: checked(createFsDriver(config.storage.filesystem.root)) };
    case 's3': {
      // Loaded on demand: the AWS SDK is large, and only S3 deployments need it.
      const { createS3Driver } = await import('./storage/s3.ts');
      const s3 = createS3Driver(config.storage.s3);
      await s3.checkBucket();
      log.info(
        { bucket: config.storage.s3.bucket, endpoint: config.storage.s3.endpoint ?? 'AWS' },
        'S3 storage ready',
      );
      return { storage: checked(s3), sweep: (before) => s3.sweepUploads(before) };
    }
  }
}

export async function start(config: Config, log: Logger = createLogger(config.log.level)): Promise<Berth> {
  const { storage, sweep } = await createStorage(config, log);
  const registry = createRegistry(storage, {
    log: log.child({ module: 'registry' }),
    manifestMaxBytes: config.registry.manifestMaxBytes,
    deleteEnabled: config.registry.deleteEnabled,
    uploadIdleMs: config.registry.uploadIdleSeconds * 1000,
  });

  let draining = false;
  const app = createApp({
    log,
    registry,
    v2: { chunkMinLength: config.registry.chunkMinLength },
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
        await registry.close();
        log.info('stopped');
      })();
      return stopping;
    },
  };
}
