// Sending blob bytes. Under the Node adapter they go straight to the socket through the storage
// driver's copyTo(), which may reuse its buffers once the socket has taken them (on the
// filesystem a pull then allocates nothing per chunk; a profile showed allocation and GC as the
// gap to Distribution). Under app.request() (tests, other runtimes) a standard Response carries
// a stream.
import { Readable } from 'node:stream';
import type { Context } from 'hono';
import type { BlobBody } from '../registry/index.ts';
import type { AppEnv } from './env.ts';

/** Headers the middleware would add after the handler, which a response written directly must carry itself. */
function middlewareHeaders(c: Context<AppEnv>): Record<string, string> {
  return { 'Docker-Distribution-API-Version': 'registry/2.0', 'X-Request-Id': c.get('requestId') };
}

export async function sendBlob(
  c: Context<AppEnv>,
  status: number,
  headers: Record<string, string>,
  body: BlobBody,
): Promise<Response> {
  const out = c.env?.outgoing;
  if (!out) return new Response(Readable.toWeb(await body.open()) as ReadableStream, { status, headers });
  out.writeHead(status, { ...headers, ...middlewareHeaders(c) });
  try {
    // Each chunk's buffer is handed back for reuse once the socket has taken it.
    await body.copyTo(
      (chunk) => new Promise((resolve, reject) => out.write(chunk, (e) => (e ? reject(e) : resolve()))),
    );
    await new Promise<void>((resolve) => out.end(resolve));
  } catch (e) {
    // The client went away or storage failed mid-body: the status is sent, so the only honest
    // signal left is to cut the connection.
    out.destroy();
    c.get('log').info({ err: (e as Error).message }, 'blob response ended early');
  }
  // Tells the adapter the response is already written; status kept for the access log.
  return new Response(null, { status, headers: { 'x-hono-already-sent': 'true' } });
}
