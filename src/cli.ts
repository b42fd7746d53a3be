#!/usr/bin/env node
// `berth <command> [flags]`: argument parsing only; serving and keys work in main.ts, and the
// admin commands call a running berth through admin-client.ts.

// Every filesystem call and fsync runs in libuv's thread pool, four threads by default: with
// several uploads committing at once, fsyncs queue behind each other. Set before any I/O.
process.env.UV_THREADPOOL_SIZE ??= '16';

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';
import {
  type AccessKeyOwner,
  AdminApiError,
  type AdminClient,
  AdminConnectionError,
  type AttachmentTarget,
  createAdminClient,
  parseBaseUrl,
  type SimulatedPrincipalType,
  type SimulationResult,
  trustedCertificates,
} from './admin-client.ts';
import { configReference, loadConfig } from './config.ts';
import { ConfigError } from './errors.ts';

const usage = () => `berth — an OCI registry with an embedded task runner

Usage:
  berth serve [--listen HOST:PORT] [--data DIR] [--config FILE]
  berth keys list | rotate | rewrap | retire KEY_ID | encrypt-plaintext [--data DIR] [--config FILE]
  berth [--url URL] [--ca FILE] [--user NAME] [--password-stdin] ADMIN-COMMAND ...
  berth --help | --version

Keys (encryption at rest):
  list                 the KEKs, which is current, and how many objects each one wraps
  rotate               add a new current KEK and re-wrap every data key under it (no blob is
                       rewritten; a running berth picks the new key file up within seconds)
  rewrap               re-wrap data keys still under an older KEK
  retire KEY_ID        remove a KEK, refused while any object still uses it
  encrypt-plaintext    rewrite objects stored before encryption was on

Admin commands (drive a running berth through its admin API over HTTPS):
${adminUsageLines()
  .map((l) => `  berth ${l}`)
  .join('\n')}

  Data is printed as JSON, actions as a short line; a refusal prints the server's message on
  stderr. A generated password or an access key's secret is printed this once only.
  policy put / repo-policy put: FILE holds a policy document (or the output of policy get);
  FILE - reads it from stdin. simulate prints the decision and the statements that decided it.
  audit list: oldest first, at most --limit entries (default 100); --type is authn, token,
  decision or admin; --actor e.g. user/alice; --since an RFC 3339 time.

Connection (admin commands; before or after the command):
  --url URL            the berth to manage (BERTH_URL; default https://localhost:5000)
  --ca FILE            trust only this CA (BERTH_CA); by default the system trust store and,
                       when present, ./data/tls/ca.crt (the CA of a berth run from here)
  --user NAME          who signs in (BERTH_USER; default admin): a user, or an access key id.
                       After accesskey, policy attach|detach and simulate, --user names the
                       user acted on: give the signing-in user before the command or in BERTH_USER
  --password-stdin     read the password (or access key secret) from stdin; else BERTH_PASSWORD.
                       There is no --password flag: it would show in ps

Exit status: 0 done (simulate: Allow); 1 refused by the server, unreachable, or audit verify
found a broken chain; 2 usage error; 3 simulate decided Deny.

Flags:
  --listen HOST:PORT   address to listen on (default 0.0.0.0:5000; port 0 picks a free port)
  --data DIR           data directory (default ./data): TLS material and, on the filesystem
                       driver, all blobs and metadata
  --config FILE        JSON config file; keys as below, nested ({"tls": {"certFile": ...}})
  -h, --help           this text
  --version            print the version

Every config key can also be set in the environment (BERTH_ + the key path in upper snake
case). Precedence: flags > environment > config file > defaults.

Config keys:
${configReference().join('\n')}
`;

async function main(argv: string[]): Promise<number> {
  const admin = adminInvocation(argv);
  if (admin) return adminMain(admin);
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (e) {
    process.stderr.write(`berth: ${(e as Error).message}\n\n${usage()}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(usage());
    return 0;
  }
  if (values.version) {
    const pkg = await import('../package.json', { with: { type: 'json' } });
    process.stdout.write(`berth ${pkg.default.version}\n`);
    return 0;
  }
  const command = positionals[0] ?? 'serve';
  if (command !== 'serve' && command !== 'keys') {
    process.stderr.write(`berth: unknown command ${command}\n\n${usage()}`);
    return 2;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig({ file: values.config, flags: { listen: values.listen, data: values.data } });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`berth: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  // The server is loaded only here: admin commands start without it, several times faster.
  const { keysCommand, start } = await import('./main.ts');
  if (command === 'keys') {
    try {
      return await keysCommand(config, positionals.slice(1), (line) => process.stdout.write(`${line}\n`));
    } catch (e) {
      process.stderr.write(`berth keys: ${(e as Error).message}\n`);
      return 1;
    }
  }
  let berth: Awaited<ReturnType<typeof start>>;
  try {
    berth = await start(config);
  } catch (e) {
    process.stderr.write(`berth: cannot start: ${(e as Error).message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      berth.log.info({ signal }, 'signal received');
      berth.stop().then(resolve, (e) => {
        berth.log.error({ err: e }, 'shutdown failed');
        resolve();
      });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  berth.log.flush();
  return 0;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      listen: { type: 'string' },
      data: { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  });
}

// ---- admin commands: a running berth driven through /api/v1 -------------------------------------
// Over HTTPS and never on the storage directly: the server holds identities and policies in memory
// and would not see offline edits.

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

interface Invocation {
  readonly values: Values;
  readonly args: readonly string[];
  readonly client: AdminClient;
  readonly stdin: () => Promise<string>;
}

interface AdminCommand {
  /** What follows `berth ` in the usage line. */
  readonly usage: string;
  readonly options?: ParseArgsOptionsConfig;
  /** How many positional arguments, at least and at most. */
  readonly args: readonly [number, number];
  /** A usage problem the parser cannot see (flags that exclude each other, ...). */
  readonly check?: (values: Values, args: readonly string[]) => string | undefined;
  /** Whether the command itself reads stdin (then the password cannot come from there). */
  readonly readsStdin?: (values: Values, args: readonly string[]) => boolean;
  readonly run: (x: Invocation) => Promise<number>;
}

const connectionOptions = {
  url: { type: 'string' },
  ca: { type: 'string' },
  user: { type: 'string' },
  'password-stdin': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsOptionsConfig;

const stringOf = (v: Values, k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
const listOf = (v: Values, k: string) =>
  (Array.isArray(v[k]) ? (v[k] as unknown[]) : []).filter((x): x is string => typeof x === 'string');
const print = (line: string) => process.stdout.write(`${line}\n`);
const printJson = (value: unknown) => print(JSON.stringify(value, null, 2));
const note = (line: string) => process.stderr.write(`${line}\n`);

/** The one flag of `names` that is set, or a usage problem. */
function exactlyOne(values: Values, names: readonly string[]): { flag: string; value: string } | string {
  const set = names.filter((n) => values[n] !== undefined && values[n] !== false);
  const wanted = names.map((n) => `--${n}`).join(' | ');
  if (set.length !== 1) return `give exactly one of ${wanted}`;
  const flag = set[0] as string;
  const value = values[flag];
  return { flag, value: typeof value === 'string' ? value : '' };
}

const ownerFlags = ['user', 'service-account'] as const;
const ownerOptions = {
  user: { type: 'string' },
  'service-account': { type: 'string' },
} as const satisfies ParseArgsOptionsConfig;

function ownerOf(values: Values): AccessKeyOwner {
  const one = exactlyOne(values, ownerFlags);
  if (typeof one === 'string') throw new Error(one);
  return { type: one.flag === 'user' ? 'user' : 'serviceaccount', name: one.value };
}

const targetFlags = ['user', 'group', 'role', 'service-account'] as const;
const targetOptions = {
  user: { type: 'string' },
  group: { type: 'string' },
  role: { type: 'string' },
  'service-account': { type: 'string' },
} as const satisfies ParseArgsOptionsConfig;

function targetOf(values: Values): AttachmentTarget {
  const one = exactlyOne(values, targetFlags);
  if (typeof one === 'string') throw new Error(one);
  const type = one.flag === 'service-account' ? 'serviceaccount' : (one.flag as 'user' | 'group' | 'role');
  return { type, name: one.value };
}

const describeTarget = (t: { type: string; name: string }) =>
  `${t.type === 'serviceaccount' ? 'service account' : t.type} ${t.name}`;

/** A policy document from FILE (`-`: stdin); the output of `policy get` is accepted too. */
async function readDocument(file: string, stdin: () => Promise<string>): Promise<unknown> {
  const text = file === '-' ? await stdin() : readFileSync(file, 'utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file === '-' ? 'stdin' : file} is not valid JSON: ${(e as Error).message}`);
  }
  if (
    typeof parsed === 'object' &&
    parsed !== null &&
    'document' in parsed &&
    !('Statement' in parsed) &&
    typeof parsed.document === 'object'
  )
    return parsed.document;
  return parsed;
}

/** Strips the line end a shell or a file leaves after a password. */
const secretFrom = (text: string) => text.replace(/[\r\n]+$/, '');

/** Reads the user, changes its groups with If-Match, and tries again if it changed meanwhile. */
async function changeGroups(client: AdminClient, user: string, change: (groups: string[]) => string[]) {
  for (let attempt = 1; ; attempt++) {
    const current = await client.getUser(user);
    const groups = change([...current.groups]);
    if (groups.length === current.groups.length && groups.every((g, i) => g === current.groups[i]))
      return false;
    try {
      await client.updateUser(user, { groups }, current.etag);
      return true;
    } catch (e) {
      if (!(e instanceof AdminApiError && e.status === 412) || attempt >= 3) throw e;
    }
  }
}

function simulationLines(r: SimulationResult, asked: string): string[] {
  const line = (m: SimulationResult['matched'][number]) =>
    `  ${m.effect.padEnd(5)}  ${m.policyId}  statement ${m.statementIndex}${m.sid ? `  Sid ${m.sid}` : ''}`;
  const deciding = r.matched.filter((m) => m.effect === r.decision);
  const others = r.matched.filter((m) => m.effect !== r.decision);
  const out = [`${r.decision} (${r.reason}): ${asked}`];
  if (deciding.length > 0) out.push('decided by:', ...deciding.map(line));
  else out.push(r.decision === 'Deny' ? 'no statement allows it (implicit deny)' : 'no statement matched');
  if (others.length > 0) out.push('overridden:', ...others.map(line));
  return out;
}

const nameArg = (x: Invocation, i = 0) => x.args[i] as string;

/** A command that prints what the server answers. */
const showing =
  (get: (x: Invocation) => Promise<unknown>) =>
  async (x: Invocation): Promise<number> => {
    printJson(await get(x));
    return 0;
  };

/** `policy attach` and `policy detach`: the same command but for the verb. */
function attachment(verb: 'attach' | 'detach'): AdminCommand {
  return {
    usage: `policy ${verb} NAME --user U | --group G | --role R | --service-account S`,
    options: targetOptions,
    args: [1, 1],
    check: (v) => {
      const one = exactlyOne(v, targetFlags);
      return typeof one === 'string' ? one : undefined;
    },
    async run(x) {
      const target = targetOf(x.values);
      if (verb === 'attach') await x.client.attachPolicy(nameArg(x), target);
      else await x.client.detachPolicy(nameArg(x), target);
      print(`${verb}ed policy ${nameArg(x)} ${verb === 'attach' ? 'to' : 'from'} ${describeTarget(target)}`);
      return 0;
    },
  };
}

const adminCommands: Record<string, AdminCommand> = {
  'user create': {
    usage: 'user create NAME [--group G ...] [--password-stdin-for-user]',
    options: { group: { type: 'string', multiple: true }, 'password-stdin-for-user': { type: 'boolean' } },
    args: [1, 1],
    readsStdin: (v) => v['password-stdin-for-user'] === true,
    async run(x) {
      const given = x.values['password-stdin-for-user'] === true;
      const password = given ? secretFrom(await x.stdin()) : randomBytes(18).toString('base64url');
      const groups = listOf(x.values, 'group');
      const user = await x.client.createUser({
        name: nameArg(x),
        password,
        ...(groups.length > 0 ? { groups } : {}),
      });
      print(`created user ${user.name}${user.groups.length > 0 ? ` in ${user.groups.join(', ')}` : ''}`);
      if (!given) {
        print(`password: ${password}`);
        note('The password is shown only this once: store it now.');
      }
      return 0;
    },
  },
  'user list': {
    usage: 'user list',
    args: [0, 0],
    run: showing((x) => x.client.listUsers()),
  },
  'user get': {
    usage: 'user get NAME',
    args: [1, 1],
    run: showing((x) => x.client.getUser(nameArg(x))),
  },
  'user delete': {
    usage: 'user delete NAME',
    args: [1, 1],
    async run(x) {
      await x.client.deleteUser(nameArg(x));
      print(`deleted user ${nameArg(x)}, its access keys and its policy attachments`);
      return 0;
    },
  },
  'group create': {
    usage: 'group create NAME [--description TEXT]',
    options: { description: { type: 'string' } },
    args: [1, 1],
    async run(x) {
      const description = stringOf(x.values, 'description');
      await x.client.createGroup({ name: nameArg(x), ...(description !== undefined ? { description } : {}) });
      print(`created group ${nameArg(x)}`);
      return 0;
    },
  },
  'group list': {
    usage: 'group list',
    args: [0, 0],
    run: showing((x) => x.client.listGroups()),
  },
  'group get': {
    usage: 'group get NAME',
    args: [1, 1],
    run: showing((x) => x.client.getGroup(nameArg(x))),
  },
  'group delete': {
    usage: 'group delete NAME',
    args: [1, 1],
    async run(x) {
      await x.client.deleteGroup(nameArg(x));
      print(`deleted group ${nameArg(x)}`);
      return 0;
    },
  },
  'group add-user': {
    usage: 'group add-user GROUP USER',
    args: [2, 2],
    async run(x) {
      const [group, user] = [nameArg(x, 0), nameArg(x, 1)];
      const changed = await changeGroups(x.client, user, (gs) => (gs.includes(group) ? gs : [...gs, group]));
      print(changed ? `added user ${user} to group ${group}` : `user ${user} is already in group ${group}`);
      return 0;
    },
  },
  'group remove-user': {
    usage: 'group remove-user GROUP USER',
    args: [2, 2],
    async run(x) {
      const [group, user] = [nameArg(x, 0), nameArg(x, 1)];
      const changed = await changeGroups(x.client, user, (gs) => gs.filter((g) => g !== group));
      print(changed ? `removed user ${user} from group ${group}` : `user ${user} is not in group ${group}`);
      return 0;
    },
  },
  'serviceaccount create': {
    usage: 'serviceaccount create NAME [--group G ...] [--description TEXT]',
    options: { group: { type: 'string', multiple: true }, description: { type: 'string' } },
    args: [1, 1],
    async run(x) {
      const groups = listOf(x.values, 'group');
      const description = stringOf(x.values, 'description');
      await x.client.createServiceAccount({
        name: nameArg(x),
        ...(groups.length > 0 ? { groups } : {}),
        ...(description !== undefined ? { description } : {}),
      });
      print(`created service account ${nameArg(x)} (give it an access key: berth accesskey create)`);
      return 0;
    },
  },
  'serviceaccount list': {
    usage: 'serviceaccount list',
    args: [0, 0],
    run: showing((x) => x.client.listServiceAccounts()),
  },
  'serviceaccount delete': {
    usage: 'serviceaccount delete NAME',
    args: [1, 1],
    async run(x) {
      await x.client.deleteServiceAccount(nameArg(x));
      print(`deleted service account ${nameArg(x)}, its access keys and its policy attachments`);
      return 0;
    },
  },
  'accesskey create': {
    usage: 'accesskey create --user NAME | --service-account NAME',
    options: ownerOptions,
    args: [0, 0],
    check: (v) => {
      const one = exactlyOne(v, ownerFlags);
      return typeof one === 'string' ? one : undefined;
    },
    async run(x) {
      const key = await x.client.createAccessKey(ownerOf(x.values));
      print(`created an access key for ${describeTarget(key.owner)}`);
      print(`id:     ${key.id}`);
      print(`secret: ${key.secret}`);
      note(
        'The secret is not shown again: store it now. Sign in with the id as user name and the secret as password.',
      );
      return 0;
    },
  },
  'accesskey list': {
    usage: 'accesskey list --user NAME | --service-account NAME',
    options: ownerOptions,
    args: [0, 0],
    check: (v) => {
      const one = exactlyOne(v, ownerFlags);
      return typeof one === 'string' ? one : undefined;
    },
    run: showing((x) => x.client.listAccessKeys(ownerOf(x.values))),
  },
  'accesskey delete': {
    usage: 'accesskey delete --user NAME | --service-account NAME  ID',
    options: ownerOptions,
    args: [1, 1],
    check: (v) => {
      const one = exactlyOne(v, ownerFlags);
      return typeof one === 'string' ? one : undefined;
    },
    async run(x) {
      const owner = ownerOf(x.values);
      await x.client.deleteAccessKey(owner, nameArg(x));
      print(`deleted access key ${nameArg(x)} of ${describeTarget(owner)}`);
      return 0;
    },
  },
  ...Object.fromEntries(
    (['deactivate', 'activate'] as const).map((verb): [string, AdminCommand] => [
      `accesskey ${verb}`,
      {
        usage: `accesskey ${verb} --user NAME | --service-account NAME  ID`,
        options: ownerOptions,
        args: [1, 1],
        check: (v) => {
          const one = exactlyOne(v, ownerFlags);
          return typeof one === 'string' ? one : undefined;
        },
        async run(x) {
          const owner = ownerOf(x.values);
          await x.client.updateAccessKey(owner, nameArg(x), verb === 'activate' ? 'active' : 'inactive');
          print(`${verb}d access key ${nameArg(x)} of ${describeTarget(owner)}`);
          return 0;
        },
      },
    ]),
  ),
  'policy put': {
    usage: 'policy put NAME FILE',
    args: [2, 2],
    readsStdin: (_, args) => args[1] === '-',
    async run(x) {
      const document = await readDocument(nameArg(x, 1), x.stdin);
      const { policy, created } = await x.client.putPolicy(nameArg(x), document);
      print(`${created ? 'created' : 'updated'} policy ${policy.name} (version ${policy.version})`);
      return 0;
    },
  },
  'policy get': {
    usage: 'policy get NAME',
    args: [1, 1],
    run: showing((x) => x.client.getPolicy(nameArg(x))),
  },
  'policy list': {
    usage: 'policy list',
    args: [0, 0],
    run: showing((x) => x.client.listPolicies()),
  },
  'policy delete': {
    usage: 'policy delete NAME',
    args: [1, 1],
    async run(x) {
      await x.client.deletePolicy(nameArg(x));
      print(`deleted policy ${nameArg(x)}`);
      return 0;
    },
  },
  'policy attach': attachment('attach'),
  'policy detach': attachment('detach'),
  'repo-policy put': {
    usage: 'repo-policy put SCOPE FILE        (SCOPE: team-a/api, team-a/* or *)',
    args: [2, 2],
    readsStdin: (_, args) => args[1] === '-',
    async run(x) {
      const document = await readDocument(nameArg(x, 1), x.stdin);
      const { policy, created } = await x.client.putRepositoryPolicy(nameArg(x), document);
      print(
        `${created ? 'created' : 'updated'} the repository policy of ${policy.scope} (version ${policy.version})`,
      );
      return 0;
    },
  },
  'repo-policy get': {
    usage: 'repo-policy get SCOPE',
    args: [1, 1],
    run: showing((x) => x.client.getRepositoryPolicy(nameArg(x))),
  },
  'repo-policy list': {
    usage: 'repo-policy list',
    args: [0, 0],
    run: showing((x) => x.client.listRepositoryPolicies()),
  },
  'repo-policy delete': {
    usage: 'repo-policy delete SCOPE',
    args: [1, 1],
    async run(x) {
      await x.client.deleteRepositoryPolicy(nameArg(x));
      print(`deleted the repository policy of ${nameArg(x)}`);
      return 0;
    },
  },
  simulate: {
    usage:
      'simulate --user NAME | --service-account NAME | --role NAME | --anonymous\n' +
      '                 --action ACTION --resource RESOURCE [--context KEY=VALUE ...]',
    options: {
      user: { type: 'string' },
      'service-account': { type: 'string' },
      role: { type: 'string' },
      anonymous: { type: 'boolean' },
      action: { type: 'string' },
      resource: { type: 'string' },
      context: { type: 'string', multiple: true },
    },
    args: [0, 0],
    check(v) {
      const one = exactlyOne(v, ['user', 'service-account', 'role', 'anonymous']);
      if (typeof one === 'string') return one;
      if (stringOf(v, 'action') === undefined) return '--action is required (e.g. registry:Pull)';
      if (stringOf(v, 'resource') === undefined) return '--resource is required (e.g. repository/team-a/api)';
      const bad = listOf(v, 'context').find((c) => c.indexOf('=') < 1);
      return bad !== undefined ? `--context ${JSON.stringify(bad)}: expected KEY=VALUE` : undefined;
    },
    async run(x) {
      const one = exactlyOne(x.values, ['user', 'service-account', 'role', 'anonymous']);
      if (typeof one === 'string') throw new Error(one);
      const type: SimulatedPrincipalType =
        one.flag === 'service-account' ? 'serviceaccount' : (one.flag as SimulatedPrincipalType);
      const context: Record<string, string | string[]> = {};
      for (const pair of listOf(x.values, 'context')) {
        const at = pair.indexOf('=');
        const [key, value] = [pair.slice(0, at), pair.slice(at + 1)];
        const had = context[key];
        context[key] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
      }
      const action = stringOf(x.values, 'action') as string;
      const resource = stringOf(x.values, 'resource') as string;
      const result = await x.client.simulate({
        principal: { type, name: type === 'anonymous' ? '' : one.value },
        action,
        resource,
        ...(Object.keys(context).length > 0 ? { context } : {}),
      });
      const who = type === 'anonymous' ? 'anonymous' : `${type}/${one.value}`;
      for (const l of simulationLines(result, `${who} ${action} on ${resource}`)) print(l);
      return result.decision === 'Allow' ? 0 : 3;
    },
  },
  'audit list': {
    usage: 'audit list [--since TIME] [--actor ACTOR] [--type TYPE] [--limit N]',
    options: {
      since: { type: 'string' },
      actor: { type: 'string' },
      type: { type: 'string' },
      limit: { type: 'string' },
    },
    args: [0, 0],
    check: (v) => {
      const limit = stringOf(v, 'limit');
      return limit !== undefined && !/^[1-9]\d{0,8}$/.test(limit)
        ? '--limit must be a whole number from 1'
        : undefined;
    },
    async run(x) {
      const v = x.values;
      const entries = await x.client.audit(
        {
          since: stringOf(v, 'since'),
          actor: stringOf(v, 'actor'),
          type: stringOf(v, 'type'),
        },
        Number(stringOf(v, 'limit') ?? 100),
      );
      printJson(entries);
      return 0;
    },
  },
  'audit verify': {
    usage: 'audit verify',
    args: [0, 0],
    async run(x) {
      const verdict = await x.client.verifyAudit();
      if (verdict.ok) {
        print(`audit log verified: ${verdict.entries} entries, hash chain intact`);
        return 0;
      }
      note(`berth audit verify: the hash chain breaks at entry ${verdict.seq}: ${verdict.problem}`);
      return 1;
    },
  },
};

const adminGroups = new Set(Object.keys(adminCommands).map((k) => k.split(' ')[0] as string));

function adminUsageLines(group?: string): string[] {
  return Object.entries(adminCommands)
    .filter(([k]) => group === undefined || k.split(' ')[0] === group)
    .map(([, c]) => c.usage);
}

function groupUsage(group: string): string {
  return `usage:\n${adminUsageLines(group)
    .map((l) => `  berth ${l}`)
    .join('\n')}\nconnection: [--url URL] [--ca FILE] [--user NAME] [--password-stdin]; see berth --help\n`;
}

interface AdminArgv {
  /** Flags before the command word. */
  readonly before: string[];
  readonly group: string;
  /** Everything after the command word. */
  readonly after: string[];
}

/** Flags that take a value, for finding the command word among the flags before it. */
const valueFlags = new Set(['--listen', '--data', '--config', '--url', '--ca', '--user']);

/** The admin command in argv, if its first positional is one; serve and keys are left alone. */
function adminInvocation(argv: string[]): AdminArgv | undefined {
  let i = 0;
  while (i < argv.length && (argv[i] as string).startsWith('-') && argv[i] !== '--')
    i += valueFlags.has(argv[i] as string) ? 2 : 1;
  const group = argv[i];
  if (group === undefined || !adminGroups.has(group)) return undefined;
  return { before: argv.slice(0, i), group, after: argv.slice(i + 1) };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The server's refusal as the user should read it: its message, then each detail on a line. */
function refusalLines(e: AdminApiError, signedInAs: string, url: string): string[] {
  const paths = e.details.filter((d): d is { path: string; message: string } => 'path' in d);
  const places = e.details.filter((d): d is AttachmentTarget => 'type' in d);
  let head = e.message;
  if (paths.length > 0) {
    // The message repeats every detail after a colon; the lines below say it one by one.
    const at = head.indexOf((paths[0] as { message: string }).message);
    if (at > 0) head = head.slice(0, at).replace(/[:;\s]+$/, '');
  }
  if (e.reason !== undefined) head += ` (${e.reason})`;
  if (e.status === 401) head += ` (signing in as ${JSON.stringify(signedInAs)} at ${url})`;
  if (e.retryAfter !== undefined) head += `; try again in ${e.retryAfter} s`;
  const lines = [head];
  for (const d of paths) {
    // Messages name their place relative to the document; the path names it in the request.
    const colon = d.message.indexOf(': ');
    const own =
      colon > 0 && d.path.endsWith(d.message.slice(0, colon)) ? d.message.slice(colon + 2) : d.message;
    lines.push(`  ${d.path}: ${own}`);
  }
  for (const d of places) lines.push(`  attached to ${describeTarget(d)}`);
  return lines;
}

async function adminMain({ before, group, after }: AdminArgv): Promise<number> {
  const usageError = (message: string, text = groupUsage(group)) => {
    process.stderr.write(`berth ${group}: ${message}\n\n${text}`);
    return 2;
  };
  if ([...before, ...after].some((a) => a === '--password' || a.startsWith('--password=')))
    return usageError(
      'there is no --password flag (it would show in ps): use --password-stdin or BERTH_PASSWORD',
    );

  let globals: Values;
  try {
    globals = parseArgs({ args: before, options: connectionOptions, allowPositionals: false }).values;
  } catch (e) {
    return usageError((e as Error).message, usage());
  }
  const single = group === 'simulate';
  const verb = single ? undefined : after[0];
  const key = single ? group : `${group} ${verb ?? ''}`;
  const command = adminCommands[key];
  if (!command) {
    if (globals['help'] || verb === '--help' || verb === '-h' || verb === 'help') {
      process.stdout.write(groupUsage(group));
      return 0;
    }
    return usageError(verb === undefined ? 'which command?' : `unknown command ${JSON.stringify(verb)}`);
  }
  const ownUser = command.options?.['user'] !== undefined;
  const { user: _signingIn, ...connectionAfter } = connectionOptions;
  const options: ParseArgsOptionsConfig = {
    ...(ownUser ? connectionAfter : connectionOptions),
    ...command.options,
  };
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: single ? after : after.slice(1), options, allowPositionals: true });
  } catch (e) {
    return usageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (globals['help'] || values['help']) {
    process.stdout.write(groupUsage(group));
    return 0;
  }
  const [min, max] = command.args;
  if (positionals.length < min || positionals.length > max)
    return usageError(
      positionals.length < min
        ? 'missing arguments'
        : `unexpected argument ${JSON.stringify(positionals[max])}`,
      `usage:\n  berth ${command.usage}\n`,
    );
  const problem = command.check?.(values, positionals);
  if (problem) return usageError(problem, `usage:\n  berth ${command.usage}\n`);

  // Connection: flags after the command word win over those before it, both over the environment.
  const env = process.env;
  const pick = (k: string) => stringOf(values, k) ?? stringOf(globals, k);
  const url = pick('url') ?? (env['BERTH_URL'] || 'https://localhost:5000');
  const caFile = pick('ca') ?? (env['BERTH_CA'] || undefined);
  const username = (ownUser ? stringOf(globals, 'user') : pick('user')) ?? (env['BERTH_USER'] || 'admin');
  const passwordFromStdin = values['password-stdin'] === true || globals['password-stdin'] === true;
  if (passwordFromStdin && command.readsStdin?.(values, positionals))
    return usageError(
      'stdin cannot carry both the password and the command input: set BERTH_PASSWORD instead',
    );
  try {
    parseBaseUrl(url);
  } catch (e) {
    return usageError(`--url ${(e as Error).message}`);
  }
  let ca: string[];
  try {
    ca = trustedCertificates(caFile);
  } catch (e) {
    return usageError(`cannot read the CA file ${caFile}: ${(e as Error).message}`);
  }
  let password: string | undefined;
  if (passwordFromStdin) {
    if (process.stdin.isTTY) note('password (end with Ctrl-D):');
    password = secretFrom(await readStdin());
  } else password = env['BERTH_PASSWORD'];
  if (!password)
    return usageError(
      passwordFromStdin
        ? 'stdin held no password'
        : 'no password: set BERTH_PASSWORD or pass --password-stdin (there is no --password flag)',
    );

  const client = createAdminClient({ url, ca, username, password });
  // `berth audit list | head` closes the pipe early: that ends the output, it is not a failure.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    process.exit(process.exitCode ?? 0);
  });
  try {
    return await command.run({ values, args: positionals, client, stdin: readStdin });
  } catch (e) {
    const prefix = `berth ${key}:`;
    if (e instanceof AdminApiError) {
      const [head, ...rest] = refusalLines(e, username, client.base.origin);
      note(`${prefix} ${head}`);
      for (const l of rest) note(l);
    } else if (e instanceof AdminConnectionError) note(`${prefix} ${e.message}`);
    else note(`${prefix} ${(e as Error).message}`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`berth: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  },
);
