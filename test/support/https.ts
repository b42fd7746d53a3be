// A small HTTPS client that trusts only berth's CA, for checks clients cannot make.
import { readFileSync } from 'node:fs';
import { request } from 'node:https';

export interface HttpsReply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

/**
 * Requests carry `authorization` (e.g. berth's admin credentials from startBerth) unless a call
 * sets its own Authorization header. `localAddress` binds the client's socket to an address of the
 * host's own (any of 127/8), so a suite can speak from several source addresses.
 */
export function httpsClient(
  base: string,
  caPath: string,
  authorization?: string,
  socket: { localAddress?: string } = {},
) {
  const ca = readFileSync(caPath);
  return (
    path: string,
    opts: { method?: string; headers?: Record<string, string>; body?: Uint8Array | string } = {},
  ) =>
    new Promise<HttpsReply>((resolve, reject) => {
      const req = request(
        new URL(path, base),
        {
          method: opts.method ?? 'GET',
          headers: { ...(authorization && { Authorization: authorization }), ...opts.headers },
          ca,
          ...(socket.localAddress !== undefined && { localAddress: socket.localAddress }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
          );
        },
      );
      req.on('error', reject);
      req.end(opts.body);
    });
}
