// One validated, frozen configuration, and the only reader of process.env.
//
// Every key is declared once in `keys` below with its type, default and doc line; --help and
// the README's config reference come from the same table. Sources, later ones winning:
// defaults < config file (JSON, --config) < environment (BERTH_ + key path in upper snake case,
// e.g. tls.certFile -> BERTH_TLS_CERT_FILE) < command-line flags (--listen, --data).
import { readFileSync, realpathSync } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { ConfigError } from './errors.ts';

type KeyType = 'string' | 'number' | 'boolean' | 'list' | 'hostport' | 'level' | 'driver';

interface KeySpec {
  readonly type: KeyType;
  readonly default: string | number | boolean | readonly string[] | undefined;
  readonly doc: string;
  readonly min?: number;
}

export const keys = {
  listen: {
    type: 'hostport',
    default: '0.0.0.0:5000',
    doc: 'address and port to listen on (HOST:PORT; port 0 picks one)',
  },
  data: {
    type: 'string',
    default: './data',
    doc: 'data directory: TLS material, and blobs on the filesystem driver',
  },
  'log.level': {
    type: 'level',
    default: 'info',
    doc: 'fatal | error | warn | info | debug | trace | silent',
  },
  'tls.enabled': {
    type: 'boolean',
    default: true,
    doc: 'serve HTTPS; false only behind a TLS-terminating proxy',
  },
  'tls.certFile': {
    type: 'string',
    default: undefined,
    doc: 'PEM certificate chain to serve instead of the generated one (reloaded on change)',
  },
  'tls.keyFile': { type: 'string', default: undefined, doc: 'PEM private key for tls.certFile' },
  'tls.names': {
    type: 'list',
    default: [],
    doc: 'extra DNS names / IPs for the generated server certificate (comma-separated in env)',
  },
  'server.trustProxy': {
    type: 'boolean',
    default: false,
    doc: 'honour X-Forwarded-Proto/Host/For (set it only behind a proxy you run)',
  },
  'server.shutdownTimeoutSeconds': {
    type: 'number',
    default: 30,
    min: 0,
    doc: 'on SIGTERM, how long in-flight requests may take to finish',
  },
  'outbound.allowHosts': {
    type: 'list',
    default: [],
    doc: 'HOST or HOST:PORT entries OIDC discovery/JWKS and webhook requests may reach over plain http or at a loopback, link-local or metadata address (otherwise: https to other addresses only)',
  },
  'storage.driver': {
    type: 'driver',
    default: 'filesystem',
    doc: 'filesystem (under DATA/storage) | s3 (any S3-compatible store) | memory (lost on exit; for tests)',
  },
  'storage.filesystem.root': {
    type: 'string',
    default: undefined,
    doc: 'filesystem driver root (default DATA/storage)',
  },
  'storage.s3.endpoint': {
    type: 'string',
    default: undefined,
    doc: 'S3-compatible endpoint URL (RGW, MinIO, ...); unset for AWS S3',
  },
  'storage.s3.region': {
    type: 'string',
    default: 'us-east-1',
    doc: 'region (signing region for S3-compatible stores)',
  },
  'storage.s3.bucket': {
    type: 'string',
    default: undefined,
    doc: 'bucket (must exist; required with storage.driver s3)',
  },
  'storage.s3.prefix': {
    type: 'string',
    default: undefined,
    doc: 'key prefix inside the bucket (default: the bucket root)',
  },
  'storage.s3.forcePathStyle': {
    type: 'boolean',
    default: undefined,
    doc: 'path-style URLs (default: true with an endpoint, false for AWS)',
  },
  'storage.s3.accessKeyId': {
    type: 'string',
    default: undefined,
    doc: 'access key id; unset: the standard AWS credential chain',
  },
  'storage.s3.secretAccessKey': {
    type: 'string',
    default: undefined,
    doc: 'secret access key for storage.s3.accessKeyId',
  },
  'storage.s3.partSize': {
    type: 'number',
    default: 16 * 1024 * 1024,
    min: 5 * 1024 * 1024,
    doc: 'multipart part size in bytes (at least 5 MiB); a write holds at most two parts in memory',
  },
  'storage.s3.maxAttempts': {
    type: 'number',
    default: 5,
    min: 1,
    doc: 'attempts per S3 request; throttling (SlowDown, 503) is retried with backoff and jitter',
  },
  'storage.s3.readWorkers': {
    type: 'number',
    default: 0,
    min: 0,
    doc: 'worker threads that fetch and decrypt encrypted blobs from S3 off the thread serving clients (0: on that thread, fastest on 2 cores)',
  },
  'encryption.enabled': {
    type: 'boolean',
    default: true,
    doc: 'encrypt everything stored (per-object data keys, AES-256-GCM, wrapped by a KEK)',
  },
  'encryption.keyFile': {
    type: 'string',
    default: undefined,
    doc: 'KEK file (default DATA/keys/kek.json, created 0600 on first start): back it up, losing it loses the data',
  },
  'encryption.keys': {
    type: 'list',
    default: [],
    doc: 'KEKs inline as id:base64 (comma-separated; the last is current); replaces the key file',
  },
  'encryption.allowPlaintext': {
    type: 'boolean',
    default: false,
    doc: 'migration: read objects stored before encryption was on (berth keys encrypt-plaintext rewrites them)',
  },
  'auth.enabled': {
    type: 'boolean',
    default: true,
    doc: 'require authentication; false is development mode (anyone may do anything: never expose it)',
  },
  'auth.adminPassword': {
    type: 'string',
    default: undefined,
    doc: 'password for the bootstrap user admin, created on first start (also BERTH_ADMIN_PASSWORD); generated and printed once when unset',
  },
  'auth.service': {
    type: 'string',
    default: 'berth',
    doc: 'service name in token challenges and the audience of issued tokens',
  },
  'auth.tokenTtlSeconds': {
    type: 'number',
    default: 300,
    min: 60,
    doc: 'lifetime of registry tokens in seconds (at least 60)',
  },
  'auth.basicOnRegistry': {
    type: 'boolean',
    default: true,
    doc: 'also accept Basic credentials directly on /v2, for clients that do not speak token auth',
  },
  'auth.oidcUsername': {
    type: 'string',
    default: 'oidc',
    doc: 'user name that means "the password is an OIDC id token" (docker login -u oidc -p $ID_TOKEN)',
  },
  'registry.manifestMaxBytes': {
    type: 'number',
    default: 4 * 1024 * 1024,
    min: 4 * 1024 * 1024,
    doc: 'largest manifest accepted (bytes; 413 above it; at least 4 MiB)',
  },
  'registry.chunkMinLength': {
    type: 'number',
    default: 0,
    min: 0,
    doc: 'OCI-Chunk-Min-Length announced to chunked uploads (0 = none)',
  },
  'registry.deleteEnabled': {
    type: 'boolean',
    default: true,
    doc: 'allow DELETE of manifests, tags and blobs',
  },
  'registry.uploadIdleSeconds': {
    type: 'number',
    default: 300,
    min: 1,
    doc: 'an upload idle this long releases its open file (it can still resume)',
  },
  'registry.uploadMaxAgeHours': {
    type: 'number',
    default: 168,
    min: 1,
    doc: 'uploads older than this are purged',
  },
  'runner.enabled': {
    type: 'boolean',
    default: true,
    doc: 'run tasks and services (the ECS endpoint at /ecs); off, /ecs answers 503; where no OCI runtime works, berth says why at start and tasks fail with that reason',
  },
  'runner.root': {
    type: 'string',
    default: undefined,
    doc: 'local directory for unpacked layers, container state, logs and task networks (default DATA/runner)',
  },
  'runner.runtime': {
    type: 'string',
    default: 'auto',
    doc: 'OCI runtime: auto | runc | crun (auto tries crun, then runc)',
  },
  'runner.region': {
    type: 'string',
    default: 'us-east-1',
    doc: 'the region in ECS ARNs, and the one SigV4 requests to /ecs are signed for',
  },
  'runner.accountId': {
    type: 'string',
    default: '000000000000',
    doc: 'the 12-digit account id in ECS ARNs',
  },
  'runner.registryHosts': {
    type: 'list',
    default: [],
    doc: 'extra registry host names that mean this berth in a task image (localhost, 127.0.0.1, the TLS names and the host name always do)',
  },
  'runner.bridgeSubnet': {
    type: 'string',
    default: '10.98.0.0/16',
    doc: 'addresses for bridge-mode tasks (podman uses 10.88.0.0/16: keep clear of it)',
  },
  'runner.bridgeName': {
    type: 'string',
    default: 'berth0',
    doc: 'the Linux bridge bridge-mode tasks attach to',
  },
  'runner.hostPathAllowList': {
    type: 'list',
    default: [],
    doc: "absolute directories task definitions may bind-mount from (host.sourcePath volumes; comma-separated in env); empty: none. /, /proc, /sys, /dev and berth's own data, keys and runner root are never mounted",
  },
  'runner.allowHostNetwork': {
    type: 'boolean',
    default: false,
    doc: "allow networkMode host (such a task shares the host's network: every service on its loopback, every port)",
  },
  'runner.logMaxBytes': {
    type: 'number',
    default: 8 * 1024 * 1024,
    min: 4096,
    doc: 'a container log file is rotated at this size (one rotated file is kept)',
  },
  'runner.hookDebounceMs': {
    type: 'number',
    default: 0,
    min: 0,
    doc: 'also merge pushes to a repository within this window (ms) into one trigger, on the final digests; costs that much start latency',
  },
  'runner.webhooksFile': {
    type: 'string',
    default: undefined,
    doc: 'JSON file listing webhooks: [{"id","url","secret","events"?,"ca"?}] (secrets stay out of the main config)',
  },
  'runner.stoppedTaskRetentionMinutes': {
    type: 'number',
    default: 60,
    min: 1,
    doc: 'how long STOPPED tasks stay describable',
  },
  'runner.userNamespace.hostIdStart': {
    type: 'number',
    default: 2013265920,
    min: 65536,
    doc: "first host uid/gid of the 65536 that every task's uids/gids 0-65535 map to (its root is this host id, never host root); at least 65536, at most 2147418112",
  },
  'runner.pidsLimit': {
    type: 'number',
    default: 2048,
    min: 16,
    doc: "most processes and threads one task may have at once (its cgroup's pids.max); a fork bomb stops there",
  },
} as const satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof keys;

/** Shorter environment names some keys also answer to (the long name wins when both are set). */
export const aliases: Partial<Record<ConfigKey, string>> = { 'auth.adminPassword': 'BERTH_ADMIN_PASSWORD' };

export interface Config {
  readonly listen: { readonly host: string; readonly port: number };
  readonly data: string;
  readonly log: { readonly level: string };
  readonly tls: {
    readonly enabled: boolean;
    readonly certFile: string | undefined;
    readonly keyFile: string | undefined;
    readonly names: readonly string[];
  };
  readonly server: { readonly trustProxy: boolean; readonly shutdownTimeoutSeconds: number };
  readonly outbound: { readonly allowHosts: readonly string[] };
  readonly storage: {
    readonly driver: 'filesystem' | 's3' | 'memory';
    readonly filesystem: { readonly root: string };
    readonly s3: {
      readonly endpoint: string | undefined;
      readonly region: string;
      readonly bucket: string;
      readonly prefix: string;
      readonly forcePathStyle: boolean;
      readonly accessKeyId: string | undefined;
      readonly secretAccessKey: string | undefined;
      readonly partSize: number;
      readonly maxAttempts: number;
      readonly readWorkers: number;
    };
  };
  readonly encryption: {
    readonly enabled: boolean;
    readonly keyFile: string;
    readonly keys: readonly string[];
    readonly allowPlaintext: boolean;
  };
  readonly auth: {
    readonly enabled: boolean;
    readonly adminPassword: string | undefined;
    readonly service: string;
    readonly tokenTtlSeconds: number;
    readonly basicOnRegistry: boolean;
    readonly oidcUsername: string;
  };
  readonly registry: {
    readonly manifestMaxBytes: number;
    readonly chunkMinLength: number;
    readonly deleteEnabled: boolean;
    readonly uploadIdleSeconds: number;
    readonly uploadMaxAgeHours: number;
  };
  readonly runner: {
    readonly enabled: boolean;
    readonly root: string;
    readonly runtime: 'auto' | 'runc' | 'crun';
    readonly region: string;
    readonly accountId: string;
    readonly registryHosts: readonly string[];
    readonly bridgeSubnet: string;
    readonly bridgeName: string;
    /** Normalised absolute directories; validated against guardedHostPaths. */
    readonly hostPathAllowList: readonly string[];
    readonly allowHostNetwork: boolean;
    readonly logMaxBytes: number;
    readonly hookDebounceMs: number;
    readonly stoppedTaskRetentionMinutes: number;
    readonly webhooksFile: string | undefined;
    readonly userNamespace: { readonly hostIdStart: number };
    readonly pidsLimit: number;
  };
}

/** How many uids and gids a task's user namespace maps (container ids 0-65535). */
const USERNS_SIZE = 65536;
const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const drivers = ['filesystem', 's3', 'memory'];

/** tls.certFile -> BERTH_TLS_CERT_FILE */
export function envName(key: string): string {
  return `BERTH_${key
    .replace(/\./g, '_')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase()}`;
}

export function parseHostPort(value: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):(\d{1,5})$/.exec(value);
  if (!m) return undefined;
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  if (m[1] !== undefined && isIP(host) !== 6) return undefined;
  return { host: host === '' ? '0.0.0.0' : host, port };
}

type Raw = Partial<Record<ConfigKey, unknown>>;

/** Turns one raw value (from a file, env string or flag) into the key's type, or throws naming the key. */
function coerce(key: ConfigKey, value: unknown, fromString: boolean): unknown {
  const spec: KeySpec = keys[key];
  const bad = (what: string) => new ConfigError(key, `${what} (got ${JSON.stringify(value)})`);
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string' || value === '') throw bad('must be a non-empty string');
      return value;
    case 'number': {
      const n = fromString && typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isFinite(n)) throw bad('must be a number');
      if (spec.min !== undefined && n < spec.min) throw bad(`must be at least ${spec.min}`);
      return n;
    }
    case 'boolean':
      if (typeof value === 'boolean') return value;
      if (fromString && typeof value === 'string' && /^(true|false|1|0|yes|no)$/i.test(value)) {
        return /^(true|1|yes)$/i.test(value);
      }
      throw bad('must be true or false');
    case 'list': {
      const list = fromString && typeof value === 'string' ? value.split(',').map((s) => s.trim()) : value;
      if (!Array.isArray(list) || list.some((s) => typeof s !== 'string' || s === '')) {
        throw bad('must be a list of non-empty strings');
      }
      return Object.freeze([...list]);
    }
    case 'hostport': {
      const hp = typeof value === 'string' ? parseHostPort(value) : undefined;
      if (!hp) throw bad('must be HOST:PORT, e.g. 0.0.0.0:5000 or [::1]:5000');
      return hp;
    }
    case 'level':
      if (typeof value !== 'string' || !levels.includes(value))
        throw bad(`must be one of ${levels.join(', ')}`);
      return value;
    case 'driver':
      if (typeof value !== 'string' || !drivers.includes(value))
        throw bad(`must be one of ${drivers.join(', ')}`);
      return value;
  }
}

/** Flattens a parsed JSON config file into dotted keys, rejecting keys we do not know. */
function flattenFile(obj: unknown, file: string, prefix = ''): Raw {
  const out: Raw = {};
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new ConfigError(prefix || '(root)', `must be an object in ${file}`);
  }
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (key in keys) out[key as ConfigKey] = v;
    else if (
      typeof v === 'object' &&
      v !== null &&
      !Array.isArray(v) &&
      Object.keys(keys).some((s) => s.startsWith(`${key}.`))
    ) {
      Object.assign(out, flattenFile(v, file, key));
    } else throw new ConfigError(key, `unknown key in ${file}`);
  }
  return out;
}

export interface ConfigSources {
  /** Path of a JSON config file (--config). */
  readonly file?: string | undefined;
  /** Values from command-line flags, already keyed (e.g. { listen, data }). */
  readonly flags?: Raw;
  /** The environment; defaults to process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export function loadConfig(sources: ConfigSources = {}): Config {
  const env = sources.env ?? process.env;
  const values = new Map<ConfigKey, unknown>();
  for (const key of Object.keys(keys) as ConfigKey[]) {
    const d = keys[key].default;
    if (d !== undefined) values.set(key, keys[key].type === 'hostport' ? parseHostPort(d as string) : d);
  }
  if (sources.file) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (e) {
      throw new ConfigError('--config', `cannot read ${sources.file}: ${(e as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new ConfigError('--config', `${sources.file} is not valid JSON: ${(e as Error).message}`);
    }
    for (const [k, v] of Object.entries(flattenFile(parsed, sources.file))) {
      values.set(k as ConfigKey, coerce(k as ConfigKey, v, false));
    }
  }
  for (const key of Object.keys(keys) as ConfigKey[]) {
    const v = env[envName(key)] ?? (aliases[key] && env[aliases[key]]);
    if (v !== undefined) values.set(key, coerce(key, v, true));
  }
  for (const [k, v] of Object.entries(sources.flags ?? {})) {
    if (v !== undefined) values.set(k as ConfigKey, coerce(k as ConfigKey, v, true));
  }
  return build(values);
}

function build(v: Map<ConfigKey, unknown>): Config {
  const get = <T>(k: ConfigKey) => v.get(k) as T;
  const data = resolve(get<string>('data'));
  const certFile = get<string | undefined>('tls.certFile');
  const keyFile = get<string | undefined>('tls.keyFile');
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigError(
      certFile ? 'tls.keyFile' : 'tls.certFile',
      'tls.certFile and tls.keyFile go together',
    );
  }
  const root = get<string | undefined>('storage.filesystem.root');
  const driver = get<string>('storage.driver');
  const bucket = get<string | undefined>('storage.s3.bucket');
  if (driver === 's3' && bucket === undefined)
    throw new ConfigError('storage.s3.bucket', 'is required with storage.driver s3');
  const accessKeyId = get<string | undefined>('storage.s3.accessKeyId');
  const secretAccessKey = get<string | undefined>('storage.s3.secretAccessKey');
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new ConfigError(
      accessKeyId ? 'storage.s3.secretAccessKey' : 'storage.s3.accessKeyId',
      'storage.s3.accessKeyId and storage.s3.secretAccessKey go together',
    );
  }
  const endpoint = get<string | undefined>('storage.s3.endpoint');
  if (endpoint !== undefined && !/^https?:\/\/[^/\s]+/.test(endpoint)) {
    throw new ConfigError('storage.s3.endpoint', `must be an http(s) URL (got ${JSON.stringify(endpoint)})`);
  }
  const runtime = get<string>('runner.runtime');
  if (!['auto', 'runc', 'crun'].includes(runtime))
    throw new ConfigError('runner.runtime', `must be auto, runc or crun (got ${JSON.stringify(runtime)})`);
  const accountId = get<string>('runner.accountId');
  if (!/^\d{12}$/.test(accountId)) throw new ConfigError('runner.accountId', 'must be 12 digits');
  const subnet = get<string>('runner.bridgeSubnet');
  if (!/^\d{1,3}(\.\d{1,3}){3}\/(1[6-9]|2[0-4])$/.test(subnet))
    throw new ConfigError(
      'runner.bridgeSubnet',
      `must be an IPv4 CIDR from /16 to /24 (got ${JSON.stringify(subnet)})`,
    );
  const runnerRoot = get<string | undefined>('runner.root');
  const hostIdStart = get<number>('runner.userNamespace.hostIdStart');
  // The range is [start, start + 65535]: never host uid 0 nor the host's own accounts (0-65535),
  // and below 2^31, where tools that read uid_t as signed go wrong.
  if (!Number.isInteger(hostIdStart) || hostIdStart + USERNS_SIZE > 2 ** 31)
    throw new ConfigError(
      'runner.userNamespace.hostIdStart',
      `must be a whole number from 65536 to ${2 ** 31 - USERNS_SIZE}, so the ${USERNS_SIZE} ids stay below 2^31 (got ${hostIdStart})`,
    );
  const pidsLimit = get<number>('runner.pidsLimit');
  if (!Number.isInteger(pidsLimit))
    throw new ConfigError('runner.pidsLimit', `must be a whole number (got ${pidsLimit})`);
  const built: Config = {
    listen: get('listen'),
    data,
    log: { level: get('log.level') },
    tls: {
      enabled: get('tls.enabled'),
      certFile: certFile && resolve(certFile),
      keyFile: keyFile && resolve(keyFile),
      names: get('tls.names'),
    },
    server: {
      trustProxy: get('server.trustProxy'),
      shutdownTimeoutSeconds: get('server.shutdownTimeoutSeconds'),
    },
    outbound: { allowHosts: get('outbound.allowHosts') },
    storage: {
      driver: get('storage.driver'),
      filesystem: { root: root ? resolve(root) : resolve(data, 'storage') },
      s3: {
        endpoint,
        region: get('storage.s3.region'),
        bucket: bucket ?? '',
        prefix: get<string | undefined>('storage.s3.prefix') ?? '',
        forcePathStyle: get<boolean | undefined>('storage.s3.forcePathStyle') ?? endpoint !== undefined,
        accessKeyId,
        secretAccessKey,
        partSize: get('storage.s3.partSize'),
        maxAttempts: get('storage.s3.maxAttempts'),
        readWorkers: Math.floor(get<number>('storage.s3.readWorkers')),
      },
    },
    encryption: {
      enabled: get('encryption.enabled'),
      keyFile: resolve(get<string | undefined>('encryption.keyFile') ?? resolve(data, 'keys', 'kek.json')),
      keys: get('encryption.keys'),
      allowPlaintext: get('encryption.allowPlaintext'),
    },
    auth: {
      enabled: get('auth.enabled'),
      adminPassword: get('auth.adminPassword'),
      service: get('auth.service'),
      tokenTtlSeconds: get('auth.tokenTtlSeconds'),
      basicOnRegistry: get('auth.basicOnRegistry'),
      oidcUsername: get('auth.oidcUsername'),
    },
    registry: {
      manifestMaxBytes: get('registry.manifestMaxBytes'),
      chunkMinLength: get('registry.chunkMinLength'),
      deleteEnabled: get('registry.deleteEnabled'),
      uploadIdleSeconds: get('registry.uploadIdleSeconds'),
      uploadMaxAgeHours: get('registry.uploadMaxAgeHours'),
    },
    runner: {
      enabled: get('runner.enabled'),
      root: runnerRoot ? resolve(runnerRoot) : resolve(data, 'runner'),
      runtime: runtime as Config['runner']['runtime'],
      region: get('runner.region'),
      accountId,
      registryHosts: get('runner.registryHosts'),
      bridgeSubnet: subnet,
      bridgeName: get('runner.bridgeName'),
      hostPathAllowList: get<readonly string[]>('runner.hostPathAllowList').map((p) => {
        if (!isAbsolute(p))
          throw new ConfigError('runner.hostPathAllowList', `'${p}' is not an absolute path`);
        return resolve(p);
      }),
      allowHostNetwork: get('runner.allowHostNetwork'),
      logMaxBytes: get('runner.logMaxBytes'),
      hookDebounceMs: get('runner.hookDebounceMs'),
      stoppedTaskRetentionMinutes: get('runner.stoppedTaskRetentionMinutes'),
      webhooksFile:
        (get<string | undefined>('runner.webhooksFile') ?? undefined) &&
        resolve(get<string>('runner.webhooksFile')),
      userNamespace: { hostIdStart },
      pidsLimit,
    },
  };
  checkHostPathAllowList(built);
  return deepFreeze(built);
}

/**
 * What no task may bind-mount, whatever runner.hostPathAllowList says (besides /, /proc, /sys and
 * /dev): berth's own files, each named with the key that places it.
 */
export function guardedHostPaths(c: Config): { path: string; what: string }[] {
  const own: [string | undefined, string][] = [
    [c.data, "berth's data directory (data)"],
    [c.encryption.keyFile, "berth's key-encryption keys (encryption.keyFile)"],
    [resolve(c.data, 'tls'), "berth's TLS keys (data/tls)"],
    [c.tls.keyFile, "berth's TLS key (tls.keyFile)"],
    [c.tls.certFile, "berth's TLS certificate (tls.certFile)"],
    [c.runner.root, "berth's runner root (runner.root)"],
    [c.storage.filesystem.root, "berth's storage (storage.filesystem.root)"],
    [c.runner.webhooksFile, "berth's webhook secrets (runner.webhooksFile)"],
  ];
  return own.filter((o): o is [string, string] => o[0] !== undefined).map(([path, what]) => ({ path, what }));
}

const systemPaths = ['/proc', '/sys', '/dev'];

function within(path: string, dir: string): boolean {
  return dir === '/' || path === dir || path.startsWith(`${dir}/`);
}

function realOrSelf(path: string): string {
  try {
    return realpathSync.native(path);
  } catch {
    return path;
  }
}

/** An allowed directory must not be, contain or lie inside a guarded path, as written or resolved. */
function checkHostPathAllowList(c: Config): void {
  const guards = [
    ...systemPaths.map((path) => ({ path, what: path })),
    ...guardedHostPaths(c).map((g) => ({ path: g.path, what: g.what })),
  ];
  for (const entry of c.runner.hostPathAllowList) {
    for (const path of new Set([entry, realOrSelf(entry)])) {
      const shown = path === entry ? `'${entry}'` : `'${entry}' (resolving to '${path}')`;
      if (path === '/')
        throw new ConfigError('runner.hostPathAllowList', `${shown} would allow every path on the host`);
      for (const g of guards) {
        for (const guard of new Set([g.path, realOrSelf(g.path)])) {
          if (!within(path, guard) && !within(guard, path)) continue;
          const how = path === guard ? 'is' : within(path, guard) ? 'lies inside' : 'contains';
          throw new ConfigError(
            'runner.hostPathAllowList',
            `${shown} ${how} ${g.what}: tasks may never mount it, so no allowed directory may hold it`,
          );
        }
      }
    }
  }
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/** The config reference: one line per key, for --help and the README. */
export function configReference(): string[] {
  return (Object.entries(keys) as [ConfigKey, KeySpec][]).map(([k, s]) => {
    const d =
      s.default === undefined
        ? ''
        : ` (default ${Array.isArray(s.default) ? s.default.join(',') || 'none' : s.default})`;
    return `  ${k.padEnd(32)} ${envName(k).padEnd(38)} ${s.doc}${d}`;
  });
}
