import { describe, expect, it } from 'vitest';
import { silentLogger } from '../log.ts';
import { checked, createMemoryDriver } from '../storage/index.ts';
import { createAuth } from './service.ts';

const doc = (...Statement: Record<string, unknown>[]) => ({ Version: '2012-10-17', Statement });

async function setup(enabled = true) {
  const auth = createAuth({
    storage: checked(createMemoryDriver()),
    log: silentLogger,
    issuer: 'https://registry.test',
    service: 'registry.test',
    scryptCost: 16,
    enabled,
    bootstrapPassword: 'admin-password',
  });
  await auth.start();
  await auth.identities.createRole({ name: 'deployer' });
  await auth.policies.putPolicy(
    'deploy-team',
    doc(
      { Effect: 'Allow', Action: 'ecs:RunTask', Resource: 'taskdefinition/web' },
      { Effect: 'Allow', Action: 'registry:Pull', Resource: 'repository/team/*' },
      { Effect: 'Deny', Action: 'registry:Pull', Resource: 'repository/team/secret' },
    ),
  );
  await auth.policies.attachPolicy('deploy-team', { type: 'role', name: 'deployer' });
  return auth;
}

const effect = async (p: Promise<{ effect: string }>) => (await p).effect;

describe('authorizeAs', () => {
  it("decides from the named role's current policies", async () => {
    const auth = await setup();
    expect(await effect(auth.authorizeAs('role/deployer', 'ecs:RunTask', 'taskdefinition/web'))).toBe(
      'Allow',
    );
    expect(await effect(auth.authorizeAs('role/deployer', 'ecs:RunTask', 'taskdefinition/db'))).toBe('Deny');
    expect(await effect(auth.authorizeAs('role/deployer', 'registry:Pull', 'repository/team/api'))).toBe(
      'Allow',
    );
    expect(await effect(auth.authorizeAs('role/deployer', 'registry:Pull', 'repository/team/secret'))).toBe(
      'Deny',
    );
    // Detaching takes effect on the next decision: nothing is cached per principal.
    await auth.policies.detachPolicy('deploy-team', { type: 'role', name: 'deployer' });
    expect(await effect(auth.authorizeAs('role/deployer', 'ecs:RunTask', 'taskdefinition/web'))).toBe('Deny');
  });

  it('takes a glob as its own text: only a pattern covering all of it allows it', async () => {
    const auth = await setup();
    const pull = (glob: string) =>
      effect(auth.authorizeAs('role/deployer', 'registry:Pull', `repository/${glob}`));
    expect(await pull('team/*')).toBe('Allow');
    expect(await pull('team/**')).toBe('Allow');
    expect(await pull('*')).toBe('Deny');
    expect(await pull('**/api')).toBe('Deny');
    expect(await pull('other/*')).toBe('Deny');
  });

  it('counts repository policies for repository resources', async () => {
    const auth = await setup();
    await auth.policies.putRepositoryPolicy(
      'shared/*',
      doc({ Effect: 'Allow', Principal: { berth: 'role/deployer' }, Action: 'registry:Pull' }),
    );
    expect(await effect(auth.authorizeAs('role/deployer', 'registry:Pull', 'repository/shared/base'))).toBe(
      'Allow',
    );
  });

  it('denies a principal that is gone or disabled, and audits the denial', async () => {
    const auth = await setup();
    await auth.identities.createUser({ name: 'carol', groups: ['admins'] });
    expect(await effect(auth.authorizeAs('user/carol', 'ecs:RunTask', 'taskdefinition/web'))).toBe('Allow');
    await auth.identities.updateUser('carol', { disabled: true });
    expect(await effect(auth.authorizeAs('user/carol', 'ecs:RunTask', 'taskdefinition/web'))).toBe('Deny');
    await auth.identities.deleteRole('deployer');
    expect(await effect(auth.authorizeAs('role/deployer', 'ecs:RunTask', 'taskdefinition/web'))).toBe('Deny');
    expect(await effect(auth.authorizeAs('nonsense', 'ecs:RunTask', 'taskdefinition/web'))).toBe('Deny');
    const { entries } = await auth.audit.query({ type: 'decision' });
    expect(entries.map((e) => [e.actor, e.reason])).toContainEqual(['role/deployer', 'no_such_principal']);
  });

  it('allows everything in development mode', async () => {
    const auth = await setup(false);
    expect(await effect(auth.authorizeAs('role/nobody', 'registry:Pull', 'repository/x'))).toBe('Allow');
  });
});
