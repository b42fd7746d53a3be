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

function createStorage(config: Config): StorageDriver {
  switch (config.storage.driver) {
    case 'memory':
      return checked(createMemoryDriver());
    case 'filesystem':
      return checked(createFsDriver(config.storage.filesystem.root));
  }
}

export async function start(config: Config, log: Logger = createLogger(config.log.level)): Promise<Berth> {
  const storage = createStorage(config);
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
