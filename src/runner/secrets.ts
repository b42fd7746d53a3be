// The secret store a task definition's `secrets` read from (ECS's valueFrom). Values go through
// the storage driver, which encrypts them at rest, and are never returned by the API: only a
// task's container sees them, as environment variables.
//
// valueFrom accepts what ECS task definitions carry, so a definition written for AWS registers and
// runs unchanged once the secrets exist here under the same names:
//   NAME                                                          (berth's own form)
//   arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[-6chars][:json-key:version-stage:version-id]
//   arn:aws:ssm:REGION:ACCOUNT:parameter/NAME   (or parameter NAME with slashes: /team/db)
import type { StorageDriver } from '../storage/index.ts';
import { createRecords } from './records.ts';

export const secretNamePattern = /^[A-Za-z0-9/_+=.@-]{1,512}$/;

export interface SecretInfo {
  name: string;
  description?: string;
  createdAt: string;
  updatedAt: string;
  /** The ARN a task definition may use in valueFrom. */
  arn: string;
}

interface StoredSecret extends Omit<SecretInfo, 'arn'> {
  value: string;
}

export class SecretError extends Error {
  override name = 'SecretError';
  readonly kind: 'invalid' | 'not_found';
  constructor(kind: 'invalid' | 'not_found', message: string) {
    super(message);
    this.kind = kind;
  }
}

export interface ParsedValueFrom {
  name: string;
  /** Secrets Manager's json-key: the value is JSON and this member is wanted. */
  jsonKey?: string;
}

export function parseValueFrom(valueFrom: string): ParsedValueFrom {
  const sm = /^arn:[^:]+:secretsmanager:[^:]*:[^:]*:secret:([^:]+)(?::([^:]*):([^:]*):([^:]*))?$/.exec(
    valueFrom,
  );
  if (sm) {
    if (sm[3] || sm[4])
      throw new SecretError('invalid', `valueFrom '${valueFrom}': version stages and ids are not supported`);
    return { name: sm[1]!, ...(sm[2] ? { jsonKey: sm[2] } : {}) };
  }
  const ssm = /^arn:[^:]+:ssm:[^:]*:[^:]*:parameter(\/.+)$/.exec(valueFrom);
  if (ssm) {
    // ECS: "parameter/name" for a name without slashes, "parameter/team/db" for "/team/db".
    const raw = ssm[1]!;
    return { name: raw.indexOf('/', 1) > 0 ? raw : raw.slice(1) };
  }
  return { name: valueFrom };
}

/** Record ids are file names: the name is hex-encoded so slashes and dots are safe. */
const idOf = (name: string) => `s-${Buffer.from(name, 'utf8').toString('hex')}`.slice(0, 255);

export function createSecretStore(storage: StorageDriver, opts: { region: string; accountId: string }) {
  const records = createRecords<StoredSecret>(storage, '/runner/secrets');
  const arnOf = (name: string) => `arn:aws:secretsmanager:${opts.region}:${opts.accountId}:secret:${name}`;
  const info = (s: StoredSecret): SecretInfo => {
    const { value: _v, ...rest } = s;
    return { ...rest, arn: arnOf(s.name) };
  };

  function checkName(name: string): void {
    if (!secretNamePattern.test(name) || name.length > 120)
      throw new SecretError(
        'invalid',
        `secret name '${name}' must be 1-120 characters of A-Z a-z 0-9 / _ + = . @ -`,
      );
  }

  async function find(name: string): Promise<StoredSecret | undefined> {
    checkName(name);
    // Secrets Manager ARNs end in "-" + 6 random characters; accept the name with or without them.
    return (
      (await records.get(idOf(name))) ??
      (/-[A-Za-z0-9]{6}$/.test(name) ? records.get(idOf(name.slice(0, -7))) : undefined)
    );
  }

  return {
    async put(
      name: string,
      value: string,
      description?: string,
    ): Promise<{ info: SecretInfo; created: boolean }> {
      checkName(name);
      if (typeof value !== 'string' || value.length > 65536)
        throw new SecretError('invalid', 'a secret value is a string of at most 64 KiB');
      const prior = await records.get(idOf(name));
      const at = new Date().toISOString();
      const s: StoredSecret = {
        name,
        value,
        ...((description ?? prior?.description) !== undefined && {
          description: description ?? prior?.description,
        }),
        createdAt: prior?.createdAt ?? at,
        updatedAt: at,
      };
      await records.save(idOf(name), s);
      return { info: info(s), created: !prior };
    },
    async get(name: string): Promise<SecretInfo> {
      const s = await find(name);
      if (!s) throw new SecretError('not_found', `no secret named '${name}'`);
      return info(s);
    },
    async list(): Promise<SecretInfo[]> {
      // Character-code order, the order the API pages in.
      return (await records.load())
        .map(info)
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    },
    async remove(name: string): Promise<void> {
      const s = await find(name);
      if (!s) throw new SecretError('not_found', `no secret named '${name}'`);
      await records.remove(idOf(s.name));
    },
    /** The value a container gets for valueFrom; SecretError names what is missing. */
    async resolve(valueFrom: string): Promise<string> {
      const ref = parseValueFrom(valueFrom);
      const s = await find(ref.name);
      if (!s)
        throw new SecretError(
          'not_found',
          `secret '${ref.name}' (from valueFrom '${valueFrom}') does not exist`,
        );
      if (ref.jsonKey === undefined) return s.value;
      let doc: unknown;
      try {
        doc = JSON.parse(s.value);
      } catch {
        throw new SecretError(
          'invalid',
          `secret '${ref.name}' is not JSON, so json-key '${ref.jsonKey}' cannot be read`,
        );
      }
      const v = (doc as Record<string, unknown> | null)?.[ref.jsonKey];
      if (v === undefined)
        throw new SecretError('not_found', `secret '${ref.name}' has no key '${ref.jsonKey}'`);
      return typeof v === 'string' ? v : JSON.stringify(v);
    },
  };
}

export type SecretStore = ReturnType<typeof createSecretStore>;
