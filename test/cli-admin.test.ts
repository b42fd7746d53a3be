// The admin commands of the CLI against a real berth: each runs `node src/cli.ts ...` as a user
// would, with the connection in BERTH_URL, BERTH_CA and BERTH_PASSWORD.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningBerth, startBerth } from './support/berth.ts';
import { httpsClient } from './support/https.ts';

const root = resolve(import.meta.dirname, '..');

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the CLI; stdin gets `input` (or nothing) and is closed, so nothing waits on a terminal. */
function cli(args: string[], env: Record<string, string | undefined> = {}, input = ''): Promise<Run> {
  return new Promise((res, rej) => {
    const merged = { ...process.env, ...env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete merged[k];
    const child = spawn(process.execPath, ['src/cli.ts', ...args], { cwd: root, env: merged });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', rej);
    child.on('close', (code) => res({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(input);
  });
}

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

// Every case runs the CLI several times, each a fresh Node process: slow on a busy machine.
describe('berth CLI without a server', { timeout: 180_000 }, () => {
  it('lists the admin commands, the connection flags and the exit codes in --help', async () => {
    const { code, stdout } = await cli(['--help']);
    expect(code).toBe(0);
    for (const s of [
      // the serve flags stay documented
      '--listen',
      '--data',
      '--config',
      'BERTH_TLS_CERT_FILE',
      'berth user create NAME [--group G ...] [--password-stdin-for-user]',
      'berth user list',
      'berth user delete NAME',
      'berth group create NAME',
      'berth group add-user GROUP USER',
      'berth accesskey create --user NAME | --service-account NAME',
      'berth accesskey list',
      'berth accesskey delete',
      'berth accesskey deactivate --user NAME | --service-account NAME  ID',
      'berth accesskey activate',
      'berth serviceaccount create NAME',
      'berth policy put NAME FILE',
      'berth policy get NAME',
      'berth policy list',
      'berth policy attach NAME --user U | --group G | --role R | --service-account S',
      'berth policy detach NAME',
      'berth repo-policy put SCOPE FILE',
      'berth simulate --user NAME',
      '--context KEY=VALUE',
      'berth audit list [--since TIME] [--actor ACTOR] [--type TYPE] [--limit N]',
      'berth audit verify',
      '--url URL',
      'BERTH_URL',
      '--ca FILE',
      'BERTH_CA',
      './data/tls/ca.crt',
      '--user NAME',
      'BERTH_USER',
      '--password-stdin',
      'BERTH_PASSWORD',
      '3 simulate decided Deny',
    ])
      expect(stdout).toContain(s);
  });

  it('refuses usage errors with exit 2 and the usage line, before connecting anywhere', async () => {
    // Nothing listens on port 1: a usage error must be found before any connection is tried.
    const env = { BERTH_URL: 'https://127.0.0.1:1', BERTH_PASSWORD: 'x' };
    const unknown = await cli(['user', 'frobnicate'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "frobnicate"');
    expect(unknown.stderr).toContain('berth user create NAME');
    expect((await cli(['policy'], env)).code).toBe(2);
    expect((await cli(['user', 'list', '--nope'], env)).code).toBe(2);
    expect((await cli(['user', 'delete'], env)).code).toBe(2);

    const noPrincipal = await cli(
      ['simulate', '--action', 'registry:Pull', '--resource', 'repository/a'],
      env,
    );
    expect(noPrincipal.code).toBe(2);
    expect(noPrincipal.stderr).toContain('--user | --service-account | --role | --anonymous');
    expect(noPrincipal.stderr).toContain('usage:\n  berth simulate');
    const twoOwners = await cli(['accesskey', 'create', '--user', 'a', '--service-account', 'b'], env);
    expect(twoOwners.code).toBe(2);
    const badContext = await cli(
      [
        'simulate',
        '--anonymous',
        '--action',
        'registry:Pull',
        '--resource',
        'repository/a',
        '--context',
        'x',
      ],
      env,
    );
    expect(badContext.code).toBe(2);
    expect((await cli(['audit', 'list', '--limit', 'lots'], env)).code).toBe(2);

    const passwordFlag = await cli(['user', 'list', '--password', 'secret'], env);
    expect(passwordFlag.code).toBe(2);
    expect(passwordFlag.stderr).toContain('no --password flag');
    const noPassword = await cli(['user', 'list'], { ...env, BERTH_PASSWORD: undefined });
    expect(noPassword.code).toBe(2);
    expect(noPassword.stderr).toContain('BERTH_PASSWORD');
    const twoOnStdin = await cli(['policy', 'put', 'p', '-', '--password-stdin'], env, 'x');
    expect(twoOnStdin.code).toBe(2);
    const plainHttp = await cli(['user', 'list', '--url', 'http://example.com'], env);
    expect(plainHttp.code).toBe(2);
    expect(plainHttp.stderr).toContain('https://');

    const groupHelp = await cli(['policy', '--help']);
    expect(groupHelp.code).toBe(0);
    expect(groupHelp.stdout).toContain('berth policy attach NAME');
  });

  it('says it cannot reach the server with exit 1', async () => {
    const r = await cli(['user', 'list'], { BERTH_URL: 'https://127.0.0.1:1', BERTH_PASSWORD: 'x' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('cannot reach https://127.0.0.1:1');
  });
});

describe('berth CLI against a running berth', { timeout: 180_000 }, () => {
  let berth: RunningBerth;
  let env: Record<string, string>;
  let dir: string;
  let https: ReturnType<typeof httpsClient>;
  const token = (user: string, password: string) =>
    https('/token?service=berth&scope=repository:team-a/api:pull', {
      headers: { Authorization: basic(user, password) },
    });

  beforeAll(async () => {
    berth = await startBerth();
    // BERTH_USER is left to its default, admin.
    env = { BERTH_URL: berth.url, BERTH_CA: berth.caPath, BERTH_PASSWORD: berth.admin.password };
    dir = mkdtempSync(join(tmpdir(), 'berth-cli-admin-'));
    https = httpsClient(berth.url, berth.caPath);
  });

  afterAll(async () => {
    await berth?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('creates a user with a generated password that signs in, and lists it', async () => {
    const created = await cli(['user', 'create', 'dev'], env);
    expect(created.stderr).toContain('shown only this once');
    expect(created.code).toBe(0);
    expect(created.stdout).toContain('created user dev');
    const password = /^password: (\S+)$/m.exec(created.stdout)?.[1];
    expect(password).toBeDefined();
    expect(password!.length).toBeGreaterThanOrEqual(16);

    const signIn = await token('dev', password!);
    expect(signIn.status).toBe(200);
    expect(JSON.parse(signIn.body.toString()).token).toMatch(/^ey/);

    const list = await cli(['user', 'list'], env);
    expect(list.code).toBe(0);
    const names = (JSON.parse(list.stdout) as { name: string }[]).map((u) => u.name);
    expect(names).toEqual(expect.arrayContaining(['admin', 'dev']));
  });

  it('takes the new password from stdin, the admin password too, and puts users in groups', async () => {
    const created = await cli(
      ['user', 'create', 'ops', '--password-stdin-for-user'],
      env,
      'ops-password-1\n',
    );
    expect(created.code).toBe(0);
    expect(created.stdout).not.toContain('password:');
    expect((await token('ops', 'ops-password-1')).status).toBe(200);

    const admin = { ...env, BERTH_PASSWORD: undefined };
    const group = await cli(
      ['group', 'create', 'builders', '--password-stdin'],
      admin,
      `${berth.admin.password}\n`,
    );
    expect(group.code).toBe(0);
    expect(group.stdout).toContain('created group builders');
    const added = await cli(['group', 'add-user', 'builders', 'ops'], env);
    expect(added.code).toBe(0);
    expect(added.stdout).toContain('added user ops to group builders');
    const again = await cli(['group', 'add-user', 'builders', 'ops'], env);
    expect(again.stdout).toContain('already in group builders');
    const user = await cli(['user', 'get', 'ops'], env);
    expect(JSON.parse(user.stdout).groups).toEqual(['builders']);

    const withGroup = await cli(['user', 'create', 'ops2', '--group', 'builders'], env);
    expect(withGroup.code).toBe(0);
    expect(withGroup.stdout).toContain('in builders');
    const deleted = await cli(['user', 'delete', 'ops2'], env);
    expect(deleted.code).toBe(0);
    expect(deleted.stdout).toContain('deleted user ops2');
    const gone = await cli(['user', 'get', 'ops2'], env);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('user "ops2" does not exist');
  });

  it('puts a policy from a file, attaches it, and simulates Allow (exit 0) and Deny (exit 3)', async () => {
    const file = join(dir, 'team-a.json');
    writeFileSync(
      file,
      JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          { Sid: 'Pull', Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/team-a/*' },
          { Sid: 'NoPush', Effect: 'Deny', Action: 'registry:Push', Resource: 'repository/team-a/*' },
          {
            Sid: 'TagsFromLan',
            Effect: 'Allow',
            Action: 'registry:ListTags',
            Resource: 'repository/team-a/*',
            Condition: { IpAddress: { 'berth:SourceIp': '10.0.0.0/8' } },
          },
        ],
      }),
    );
    const put = await cli(['policy', 'put', 'team-a', file], env);
    expect(put.stderr).toBe('');
    expect(put.code).toBe(0);
    expect(put.stdout).toContain('created policy team-a (version 1)');
    const replaced = await cli(['policy', 'put', 'team-a', file], env);
    expect(replaced.stdout).toContain('updated policy team-a (version 2)');

    const attach = await cli(['policy', 'attach', 'team-a', '--user', 'dev'], env);
    expect(attach.code).toBe(0);
    expect(attach.stdout).toContain('attached policy team-a to user dev');
    const got = await cli(['policy', 'get', 'team-a'], env);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout).attachments).toEqual([{ type: 'user', name: 'dev' }]);
    const list = await cli(['policy', 'list'], env);
    expect((JSON.parse(list.stdout) as { name: string }[]).map((p) => p.name)).toContain('team-a');

    const allow = await cli(
      ['simulate', '--user', 'dev', '--action', 'registry:Pull', '--resource', 'repository/team-a/api'],
      env,
    );
    expect(allow.stderr).toBe('');
    expect(allow.code).toBe(0);
    expect(allow.stdout).toContain('Allow (allowed): user/dev registry:Pull on repository/team-a/api');
    expect(allow.stdout).toMatch(/decided by:\n {2}Allow\s+policy\/team-a\s+statement 0\s+Sid Pull/);

    const deny = await cli(
      ['simulate', '--user', 'dev', '--action', 'registry:Push', '--resource', 'repository/team-a/api'],
      env,
    );
    expect(deny.code).toBe(3);
    expect(deny.stdout).toContain('Deny (explicit-deny)');
    expect(deny.stdout).toMatch(/decided by:\n {2}Deny\s+policy\/team-a\s+statement 1\s+Sid NoPush/);

    const elsewhere = await cli(
      ['simulate', '--user', 'dev', '--action', 'registry:Pull', '--resource', 'repository/team-b/api'],
      env,
    );
    expect(elsewhere.code).toBe(3);
    expect(elsewhere.stdout).toContain('implicit deny');

    const simulateTags = (ip: string) =>
      cli(
        [
          'simulate',
          '--user',
          'dev',
          '--action',
          'registry:ListTags',
          '--resource',
          'repository/team-a/api',
          '--context',
          `berth:SourceIp=${ip}`,
        ],
        env,
      );
    expect((await simulateTags('10.1.2.3')).code).toBe(0);
    expect((await simulateTags('192.0.2.1')).code).toBe(3);

    const anonymous = await cli(
      ['simulate', '--anonymous', '--action', 'registry:Pull', '--resource', 'repository/team-a/api'],
      env,
    );
    expect(anonymous.code).toBe(3);

    const detach = await cli(['policy', 'detach', 'team-a', '--user', 'dev'], env);
    expect(detach.code).toBe(0);
    expect(detach.stdout).toContain('detached policy team-a from user dev');
    const after = await cli(
      ['simulate', '--user', 'dev', '--action', 'registry:Pull', '--resource', 'repository/team-a/api'],
      env,
    );
    expect(after.code).toBe(3);
  });

  it('prints each problem of a bad policy with its path, and exits 1', async () => {
    const file = join(dir, 'bad.json');
    writeFileSync(
      file,
      JSON.stringify({
        Version: '2012-10-17',
        Statement: [{ Effect: 'Alow', Action: 'registry:Pul', Resource: 'repository/x' }],
      }),
    );
    const bad = await cli(['policy', 'put', 'bad', file], env);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe('');
    const lines = bad.stderr.trim().split('\n');
    expect(lines[0]).toContain('berth policy put: policy "bad" is invalid');
    expect(lines).toContain('  document.Statement[0].Effect: must be "Allow" or "Deny"');
    expect(
      lines.some((l) => l.startsWith('  document.Statement[0].Action: ') && l.includes('registry:Pul')),
    ).toBe(true);

    const notJson = join(dir, 'not.json');
    writeFileSync(notJson, '{"Version": ');
    const broken = await cli(['policy', 'put', 'bad', notJson], env);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain('is not valid JSON');
    expect((await cli(['policy', 'get', 'bad'], env)).code).toBe(1);
  });

  it('puts a repository policy for a prefix from stdin', async () => {
    const doc = JSON.stringify({
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Principal: '*', Action: 'registry:Pull' }],
    });
    const put = await cli(['repo-policy', 'put', 'public/*', '-'], env, doc);
    expect(put.stderr).toBe('');
    expect(put.code).toBe(0);
    expect(put.stdout).toContain('public/*');
    const got = await cli(['repo-policy', 'get', 'public/*'], env);
    expect(got.code).toBe(0);
    expect(JSON.parse(got.stdout).scope).toBe('public/*');
    const sim = await cli(
      ['simulate', '--anonymous', '--action', 'registry:Pull', '--resource', 'repository/public/tools'],
      env,
    );
    expect(sim.code).toBe(0);
    expect(sim.stdout).toContain('repository/public/*');
  });

  it('creates an access key whose secret works as Basic credentials, for the registry and the CLI', async () => {
    const created = await cli(['accesskey', 'create', '--user', 'dev'], env);
    expect(created.code).toBe(0);
    expect(created.stderr).toContain('not shown again');
    const id = /^id: +(BK[A-Z2-7]{18})$/m.exec(created.stdout)?.[1];
    const secret = /^secret: +(\S+)$/m.exec(created.stdout)?.[1];
    expect(id).toBeDefined();
    expect(secret).toBeDefined();
    expect((await token(id!, secret!)).status).toBe(200);

    const listed = await cli(['accesskey', 'list', '--user', 'dev'], env);
    expect(listed.code).toBe(0);
    const keys = JSON.parse(listed.stdout) as { id: string; secret?: string }[];
    expect(keys.map((k) => k.id)).toEqual([id]);
    expect(keys[0]!.secret).toBeUndefined();

    // An access key signs the CLI in too: the admin's own, with --user after the command naming
    // whose key it is, and the signing-in user given before the command.
    const own = await cli(['--user', 'admin', 'accesskey', 'create', '--user', 'admin'], env);
    expect(own.code).toBe(0);
    const adminId = /^id: +(\S+)$/m.exec(own.stdout)![1]!;
    const adminSecret = /^secret: +(\S+)$/m.exec(own.stdout)![1]!;
    const viaKey = await cli(['user', 'list'], { ...env, BERTH_USER: adminId, BERTH_PASSWORD: adminSecret });
    expect(viaKey.stderr).toBe('');
    expect(viaKey.code).toBe(0);

    // Deactivated, the key signs nobody in; activated again, it does.
    const off = await cli(['accesskey', 'deactivate', '--user', 'dev', id!], env);
    expect(off.stderr).toBe('');
    expect(off.stdout).toContain(`deactivated access key ${id}`);
    expect((await token(id!, secret!)).status).toBe(401);
    expect((await cli(['accesskey', 'activate', '--user', 'dev', id!], env)).code).toBe(0);
    expect((await token(id!, secret!)).status).toBe(200);

    const deleted = await cli(['accesskey', 'delete', '--user', 'dev', id!], env);
    expect(deleted.code).toBe(0);
    expect((await token(id!, secret!)).status).toBe(401);
  });

  it('creates a service account with an access key', async () => {
    const created = await cli(['serviceaccount', 'create', 'ci'], env);
    expect(created.code).toBe(0);
    expect(created.stdout).toContain('created service account ci');
    const key = await cli(['accesskey', 'create', '--service-account', 'ci'], env);
    expect(key.code).toBe(0);
    expect(key.stdout).toContain('service account ci');
    const id = /^id: +(\S+)$/m.exec(key.stdout)![1]!;
    const secret = /^secret: +(\S+)$/m.exec(key.stdout)![1]!;
    expect((await token(id, secret)).status).toBe(200);
  });

  it('shows the admin events in audit list and verifies the chain', async () => {
    const list = await cli(
      ['audit', 'list', '--type', 'admin', '--actor', 'user/admin', '--limit', '1000'],
      env,
    );
    expect(list.stderr).toBe('');
    expect(list.code).toBe(0);
    const entries = JSON.parse(list.stdout) as { type: string; action: string; resource?: string }[];
    expect(entries.every((e) => e.type === 'admin')).toBe(true);
    const seen = entries.map((e) => `${e.action} ${e.resource}`);
    expect(seen).toEqual(
      expect.arrayContaining([
        'admin:CreateUser user/dev',
        'admin:PutPolicy policy/team-a',
        'admin:AttachPolicy user/dev',
        'admin:CreateAccessKey user/dev',
      ]),
    );
    // The CLI signed in for tokens scoped to the admin API, and used those.
    const tokens = await cli(
      ['audit', 'list', '--type', 'token', '--actor', 'user/admin', '--limit', '1000'],
      env,
    );
    const issued = JSON.parse(tokens.stdout) as { detail?: { access?: string[] } }[];
    expect(issued.some((e) => e.detail?.access?.includes('berth:admin:*'))).toBe(true);
    const two = await cli(['audit', 'list', '--limit', '2'], env);
    expect(JSON.parse(two.stdout)).toHaveLength(2);
    const badType = await cli(['audit', 'list', '--type', 'gossip'], env);
    expect(badType.code).toBe(1);
    expect(badType.stderr).toContain('type: must be one of');

    const verify = await cli(['audit', 'verify'], env);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/audit log verified: \d+ entries/);
  });

  it('exits 1 with the server message on a wrong password or a refusal', async () => {
    const wrong = await cli(['user', 'list'], { ...env, BERTH_PASSWORD: 'not-the-password' });
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toBe('');
    // The CLI signs in at the token endpoint, which refuses the password.
    expect(wrong.stderr).toContain('berth user list: incorrect username or password (signing in as "admin"');

    // ops has no policy: signed in, but no admin action is allowed, so the admin scope is not either.
    const refused = await cli(['--user', 'ops', 'user', 'list'], {
      ...env,
      BERTH_PASSWORD: 'ops-password-1',
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('refused scope berth:admin:*: no policy allows user ops');
    expect(refused.stderr).toContain('(no_allow)');

    const untrusted = await cli(['user', 'list'], { ...env, BERTH_CA: undefined });
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toContain('cannot verify the certificate');
  });
});
