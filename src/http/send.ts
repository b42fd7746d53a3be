// Streaming a blob to the client. Under the Node adapter the bytes go straight from the storage
// stream into the socket (pipeline, with its backpressure): converting to a web ReadableStream
// and back costs a promise and a copy per chunk, which shows on the pull path. Under
// app.request() (tests, other runtimes) it falls back to a standard Response.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Context } from 'hono';
import type { AppEnv } from './env.ts';

/** Headers the middleware would add after the handler, which a response written directly must carry itself. */
function middlewareHeaders(c: Context<AppEnv>): Record<string, string> {
  return { 'Docker-Distribution-API-Version': 'registry/2.0', 'X-Request-Id': c.get('requestId') };
}

export async function sendStream(
  c: Context<AppEnv>,
  status: number,
  headers: Record<string, string>,
  body: Readable,
): Promise<Response> {
  const out = c.env?.outgoing;
  if (!out) return new Response(Readable.toWeb(body) as ReadableStream, { status, headers });
  out.writeHead(status, { ...headers, ...middlewareHeaders(c) });
  try {
    await pipeline(body, out);
  } catch (e) {
    // The client went away or storage failed mid-body: the status is sent, so the only honest
    // signal left is to cut the connection, which pipeline has done.
    c.get('log').info({ err: (e as Error).message }, 'blob response ended early');
  }
  // Tells the adapter the response is already written; status kept for the access log.
  return new Response(null, { status, headers: { 'x-hono-already-sent': 'true' } });
}
