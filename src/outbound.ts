// Requests berth sends to URLs that someone other than berth chose: an OIDC issuer an admin-API
// caller registered, the jwks_uri its discovery document names, a webhook receiver. Each is a way
// for that someone to make berth talk to a place of their choosing, so every such request is
// bounded here, in one place:
//
//   - https only. Plain http goes only to a host the operator lists in `outbound.allowHosts`.
//   - Not to this machine or its link: loopback (berth's own admin API, the S3 store and database
//     beside it), unspecified, link-local (where cloud metadata services hand out the machine's
//     credentials; also AWS's and Alibaba's metadata addresses outside that range), multicast and
//     reserved addresses are refused, whether the URL names them or a DNS name resolves to them
//     (checked on the addresses the connection is made to, so a name that changes its answer
//     between a check and the connect gains nothing), unless the host is listed in
//     `outbound.allowHosts`. Private networks (10/8, 172.16/12, 192.168/16, fc00::/7) are allowed:
//     an intranet's own issuer or CI is the common case for a self-hosted registry.
//   - A deadline for the whole exchange (connect, TLS, headers and body) and a shorter one for the
//     connection, so a peer that never answers, or answers one byte at a time, is cut off.
//   - A size limit on the response body, enforced while it arrives: a larger body is refused (or,
//     when the caller only wants an excerpt, cut) without being read to its end.
//   - Redirects are never followed: the caller gets the 3xx and its Location, and the operator
//     configures the URL it points to. A signed webhook or a key lookup goes only where configured.
//
// `outbound.allowHosts` entries are HOST or HOST:PORT (IPv6 in brackets); a bare HOST allows every
// port. They lift both rules above for that host: the operator vouches for it.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP } from 'node:net';
import { ConfigError } from './errors.ts';

/** The config key that allows plain http and local addresses for named hosts. */
export const allowHostsKey = 'outbound.allowHosts';

export type OutboundErrorReason = 'refused' | 'timeout' | 'too-large' | 'network';

/** Why an outbound request was not made or did not complete; the message names the URL. */
export class OutboundError extends Error {
  readonly reason: OutboundErrorReason;
  constructor(reason: OutboundErrorReason, message: string, opts: { cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'OutboundError';
    this.reason = reason;
  }
}

export interface OutboundInit {
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  /** PEM certificate(s) to trust instead of the system CAs (https only). */
  ca?: string;
  /** The whole exchange: connect, TLS, request, response headers and body. */
  timeoutMs: number;
  /** Establishing the connection (TCP and TLS); default the lesser of timeoutMs and 5 s. */
  connectTimeoutMs?: number;
  /** The most body bytes read. */
  maxBodyBytes: number;
  /**
   * 'error' (default): a longer body fails the request with 'too-large'. 'truncate': the first
   * maxBodyBytes are kept, the connection is closed, and the response says `truncated`.
   */
  overflow?: 'error' | 'truncate';
}

export interface OutboundResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** With overflow 'truncate': the body was longer than maxBodyBytes and was cut. */
  readonly truncated: boolean;
}

export interface Outbound {
  /**
   * The URL parsed, if berth may send a request to it as far as the URL itself tells: scheme,
   * and a literal address or `localhost`. Names are checked again on their addresses at connect
   * time. OutboundError 'refused' otherwise, naming `outbound.allowHosts`.
   */
  check(url: string | URL): URL;
  request(url: string | URL, init: OutboundInit): Promise<OutboundResponse>;
}

type Lookup = typeof dnsLookup;

export interface OutboundOptions {
  /** HOST or HOST:PORT entries (outbound.allowHosts). */
  allowHosts: readonly string[];
  /** Name resolution; dns.lookup by default (tests hand in a resolver of their own). */
  lookup?: Lookup;
}

// What a request may not reach, with what to call it in a refusal.
const localRanges: readonly { what: string; list: BlockList }[] = [
  ['a loopback address', ['127.0.0.0/8', '::1/128']],
  ['an unspecified address (this host)', ['0.0.0.0/8', '::/128']],
  [
    'a link-local or cloud metadata address',
    ['169.254.0.0/16', 'fe80::/10', 'fd00:ec2::254/128', '100.100.100.200/32'],
  ],
  ['a multicast or reserved address', ['224.0.0.0/3', 'ff00::/8']],
].map(([what, cidrs]) => {
  const list = new BlockList();
  for (const cidr of cidrs as string[]) {
    const [net, bits] = cidr.split('/') as [string, string];
    list.addSubnet(net, Number(bits), isIP(net) === 6 ? 'ipv6' : 'ipv4');
  }
  return { what: what as string, list };
});

/** What kind of address berth does not reach on its own ('a loopback address', ...), if it is one. */
export function localAddressKind(address: string): string | undefined {
  const family = isIP(address);
  if (family === 0) return undefined;
  const type = family === 6 ? 'ipv6' : 'ipv4';
  return localRanges.find((r) => r.list.check(address, type))?.what;
}

interface AllowEntry {
  /** As URL.hostname spells it: lower case, IPv6 in brackets. */
  host: string;
  port?: string;
}

/** One outbound.allowHosts entry; ConfigError naming `<key>[i]` when it is not HOST or HOST:PORT. */
function parseAllowEntry(entry: string, at: string): AllowEntry {
  const bad = () =>
    new ConfigError(
      at,
      `${JSON.stringify(entry)} is not HOST or HOST:PORT (e.g. issuer.internal, 127.0.0.1:8080, [::1]:9000)`,
    );
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$/.exec(entry.trim());
  if (!m) throw bad();
  let url: URL;
  try {
    url = new URL(`http://${m[1]}`);
  } catch {
    throw bad();
  }
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) throw bad();
  return { host: url.hostname, ...(m[2] !== undefined && { port: String(Number(m[2])) }) };
}

const defaultPort = (url: URL) => url.port || (url.protocol === 'https:' ? '443' : '80');
const bare = (hostname: string) => hostname.replace(/^\[|\]$/g, '');
const isLocalhostName = (host: string) => host === 'localhost' || host.endsWith('.localhost');

export function createOutbound(opts: OutboundOptions): Outbound {
  const allow = opts.allowHosts.map((e, i) => parseAllowEntry(e, `${allowHostsKey}[${i}]`));
  const resolve = opts.lookup ?? dnsLookup;

  const allowed = (url: URL) =>
    allow.some((a) => a.host === url.hostname && (a.port === undefined || a.port === defaultPort(url)));
  const hint = (url: URL) => `list "${url.hostname}:${defaultPort(url)}" in ${allowHostsKey} to allow it`;

  function check(raw: string | URL): URL {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new OutboundError('refused', `${JSON.stringify(String(raw))} is not a URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:')
      throw new OutboundError('refused', `${url.origin}: only https (or http where allowed) is supported`);
    if (allowed(url)) return url;
    if (url.protocol === 'http:')
      throw new OutboundError(
        'refused',
        `${url.origin} is plain http, which berth uses only for hosts the operator allows: ${hint(url)}`,
      );
    const host = bare(url.hostname);
    const kind = isLocalhostName(host) ? 'a loopback address' : localAddressKind(host);
    if (kind)
      throw new OutboundError(
        'refused',
        `${url.origin} is ${kind}, which berth does not reach: ${hint(url)}`,
      );
    return url;
  }

  /** dns.lookup, refusing a name any of whose addresses is local. */
  function guardedLookup(url: URL, what: string): Lookup {
    return ((hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
      resolve(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
        if (err) return callback(err);
        for (const a of addresses) {
          const kind = localAddressKind(a.address);
          if (kind)
            return callback(
              new OutboundError(
                'refused',
                `${what}: ${hostname} resolves to ${a.address}, ${kind}, which berth does not reach: ${hint(url)}`,
              ),
            );
        }
        if (options.all) return callback(null, addresses);
        const first = addresses[0];
        if (!first)
          return callback(Object.assign(new Error(`${hostname}: no address`), { code: 'ENOTFOUND' }));
        callback(null, first.address, first.family);
      });
    }) as Lookup;
  }

  function request(raw: string | URL, init: OutboundInit): Promise<OutboundResponse> {
    const url = check(raw);
    const method = init.method ?? 'GET';
    const what = `${method} ${url.origin}${url.pathname}`;
    const max = init.maxBodyBytes;
    const connectMs = init.connectTimeoutMs ?? Math.min(init.timeoutMs, 5000);
    const secure = url.protocol === 'https:';
    const headers: Record<string, string> = { ...init.headers };
    if (init.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length'))
      headers['content-length'] = String(Buffer.byteLength(init.body));

    return new Promise<OutboundResponse>((resolvePromise, reject) => {
      let settled = false;
      const timers: NodeJS.Timeout[] = [];
      const req = (secure ? httpsRequest : httpRequest)(url, {
        method,
        headers,
        // A connection of its own, resolved through the guard: never a pooled socket to somewhere
        // a previous request was allowed to go.
        agent: false,
        ...(allowed(url) ? {} : { lookup: guardedLookup(url, what) }),
        ...(secure && init.ca !== undefined ? { ca: init.ca } : {}),
      });
      const done = () => {
        settled = true;
        for (const t of timers) clearTimeout(t);
      };
      const fail = (err: OutboundError) => {
        if (settled) return;
        done();
        req.destroy();
        reject(err);
      };
      const succeed = (res: OutboundResponse) => {
        if (settled) return;
        done();
        req.destroy();
        resolvePromise(res);
      };

      timers.push(
        setTimeout(
          () => fail(new OutboundError('timeout', `${what}: no complete answer within ${init.timeoutMs} ms`)),
          init.timeoutMs,
        ),
        setTimeout(
          () => fail(new OutboundError('timeout', `${what}: could not connect within ${connectMs} ms`)),
          connectMs,
        ),
      );
      const connectTimer = timers[1]!;
      req.on('socket', (socket) => {
        socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
      });
      req.on('error', (err: Error & { code?: string }) => {
        if (err instanceof OutboundError) return fail(err);
        fail(
          new OutboundError('network', `${what}: ${err.code ? `${err.code}: ` : ''}${err.message}`, {
            cause: err,
          }),
        );
      });

      const tooLarge = () =>
        new OutboundError(
          'too-large',
          `${what}: the response is larger than ${bytes(max)}, the most berth reads here`,
        );
      req.on('response', (res) => {
        const declared = Number(res.headers['content-length']);
        if (init.overflow !== 'truncate' && declared > max) return fail(tooLarge());
        const chunks: Buffer[] = [];
        let size = 0;
        const answer = (truncated: boolean) =>
          succeed({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks, size),
            truncated,
          });
        res.on('data', (chunk: Buffer) => {
          if (settled) return;
          if (size + chunk.length > max) {
            if (init.overflow !== 'truncate') return fail(tooLarge());
            chunks.push(chunk.subarray(0, max - size));
            size = max;
            return answer(true);
          }
          chunks.push(chunk);
          size += chunk.length;
        });
        res.on('end', () => answer(false));
        res.on('error', (err) =>
          fail(new OutboundError('network', `${what}: ${err.message}`, { cause: err })),
        );
        res.on('close', () => {
          if (!res.complete) fail(new OutboundError('network', `${what}: the connection closed mid-answer`));
        });
      });
      req.end(init.body);
    });
  }

  return { check, request };
}

function bytes(n: number): string {
  if (n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}
