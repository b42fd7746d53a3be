// The listening server: HTTPS (or plain HTTP behind a proxy) around the Hono app, with
// certificate hot-swap and a bounded graceful close.
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { DEFAULT_CIPHERS } from 'node:tls';
import { getRequestListener } from '@hono/node-server';
import type { Logger } from '../log.ts';
import type { App } from './app.ts';

/**
 * TLS 1.2+ and, among the TLS 1.3 suites, AES-128-GCM first (as Go's crypto/tls and browsers
 * order them): OpenSSL's default puts AES-256-GCM first, which costs both ends about a third more
 * CPU per byte on a blob pull for no security a registry needs.
 */
const tlsSettings = {
  minVersion: 'TLSv1.2',
  ciphers: [
    'TLS_AES_128_GCM_SHA256',
    'TLS_AES_256_GCM_SHA384',
    'TLS_CHACHA20_POLY1305_SHA256',
    DEFAULT_CIPHERS,
  ].join(':'),
  honorCipherOrder: true,
} as const;

export interface ServerOptions {
  readonly app: Pick<App, 'fetch'>;
  readonly host: string;
  readonly port: number;
  readonly log: Logger;
  /** PEM key and certificate; undefined serves plain HTTP. */
  readonly tls?: { readonly key: string; readonly cert: string } | undefined;
}

export interface RunningServer {
  readonly address: string;
  readonly port: number;
  readonly secure: boolean;
  /** Replaces the certificate for new connections. */
  setCertificate(tls: { key: string; cert: string }): void;
  /** Stops accepting, lets in-flight requests finish for up to timeoutMs, then cuts the rest. */
  close(timeoutMs: number): Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const listener = getRequestListener(opts.app.fetch, {
    errorHandler: (err) => {
      opts.log.error({ err }, 'unhandled error while responding');
    },
  });
  const server: Server | HttpsServer = opts.tls
    ? createHttpsServer({ ...tlsSettings, key: opts.tls.key, cert: opts.tls.cert }, listener)
    : createHttpServer(listener);
  // Large layers stream for minutes; a slow client must not be cut by the default timeouts.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 30_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;

  return {
    address: `${host}:${addr.port}`,
    port: addr.port,
    secure: opts.tls !== undefined,
    setCertificate(tls) {
      if ('setSecureContext' in server) server.setSecureContext({ key: tls.key, cert: tls.cert });
    },
    async close(timeoutMs) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Keep-alive connections that finish their last request while we drain would otherwise
      // hold the close open until their idle timeout.
      server.closeIdleConnections();
      const sweep = setInterval(() => server.closeIdleConnections(), 50);
      const timer = setTimeout(() => {
        opts.log.warn({ timeoutMs }, 'shutdown timeout: closing remaining connections');
        server.closeAllConnections();
      }, timeoutMs);
      timer.unref();
      await closed;
      clearInterval(sweep);
      clearTimeout(timer);
    },
  };
}
