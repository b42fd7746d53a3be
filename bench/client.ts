// A lean HTTPS client for the benchmark: keep-alive sockets per target, bodies sent from
// prebuilt buffers, responses hashed as they stream so every byte is checked without copies.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  /** sha256 of the body, when asked for. */
  readonly digest?: string;
  readonly bytes: number;
}

export function client(base: string, caPath: string, sockets: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: sockets, ca: readFileSync(caPath) });
  const origin = new URL(base);
  return {
    agent,
    call(
      method: string,
      path: string,
      opts: { body?: Uint8Array; headers?: Record<string, string>; hash?: boolean } = {},
    ): Promise<Reply> {
      const url = new URL(path, origin);
      return new Promise((resolve, reject) => {
        const req = request(
          url,
          {
            method,
            agent,
            headers: {
              ...(opts.body ? { 'Content-Length': String(opts.body.byteLength) } : {}),
              ...opts.headers,
            },
          },
          (res) => {
            const h = opts.hash ? createHash('sha256') : undefined;
            let bytes = 0;
            res.on('data', (c: Buffer) => {
              bytes += c.byteLength;
              h?.update(c);
            });
            res.on('end', () =>
              resolve({
                status: res.statusCode!,
                headers: res.headers,
                bytes,
                ...(h && { digest: `sha256:${h.digest('hex')}` }),
              }),
            );
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end(opts.body);
      });
    },
    close() {
      agent.destroy();
    },
  };
}

export type Client = ReturnType<typeof client>;

/** Throws with context when a reply is not what the protocol promises. */
export function expectStatus(r: Reply, status: number, what: string): void {
  if (r.status !== status) throw new Error(`${what}: expected ${status}, got ${r.status}`);
}
