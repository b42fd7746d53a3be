import { describe, expect, it } from 'vitest';
import { formatScope, parseScope, parseScopes } from './scope.ts';

describe('parseScope', () => {
  it('parses a repository scope', () => {
    expect(parseScope('repository:library/alpine:pull')).toEqual({
      type: 'repository',
      name: 'library/alpine',
      actions: ['pull'],
    });
  });

  it('keeps a host with a port in the name', () => {
    expect(parseScope('repository:localhost:5000/team/app:pull,push')).toEqual({
      type: 'repository',
      name: 'localhost:5000/team/app',
      actions: ['pull', 'push'],
    });
    expect(parseScope('repository:registry.example.com/app:delete')?.name).toBe('registry.example.com/app');
  });

  it('orders and deduplicates actions', () => {
    expect(parseScope('repository:app:*,push,pull,push')?.actions).toEqual(['pull', 'push', '*']);
    expect(parseScope('repository:app:delete')?.actions).toEqual(['delete']);
  });

  it('accepts the catalog scope', () => {
    expect(parseScope('registry:catalog:*')).toEqual({ type: 'registry', name: 'catalog', actions: ['*'] });
  });

  it('accepts the admin API scope', () => {
    expect(parseScope('berth:admin:*')).toEqual({ type: 'berth', name: 'admin', actions: ['*'] });
  });

  it('accepts and drops a resource class', () => {
    expect(parseScope('repository(plugin):vieux/sshfs:pull')).toEqual({
      type: 'repository',
      name: 'vieux/sshfs',
      actions: ['pull'],
    });
  });

  it.each([
    '',
    'repository',
    'repository:app',
    'repository:app:',
    'repository::pull',
    'repository:app:pull,',
    'repository:app:read',
    'repository:App:pull',
    'repository:app/:pull',
    'repository:a:b/c:pull',
    'repository:host:port/app:pull',
    'repository(Plugin):app:pull',
    'repository():app:pull',
    'registry:catalog:pull',
    'registry:other:*',
    'berth:admin:pull',
    'berth:other:*',
    'unknown:thing:pull',
    `repository:${'a'.repeat(256)}:pull`,
  ])('rejects %j', (s) => {
    expect(parseScope(s)).toBeNull();
  });
});

describe('formatScope', () => {
  it('round-trips what parseScope accepts', () => {
    for (const s of [
      'repository:localhost:5000/app:pull,push',
      'registry:catalog:*',
      'berth:admin:*',
      'repository:a/b:delete',
    ]) {
      const scope = parseScope(s);
      expect(scope).not.toBeNull();
      expect(formatScope(scope!)).toBe(s);
    }
  });

  it('writes actions in canonical order', () => {
    expect(formatScope({ type: 'repository', name: 'app', actions: ['push', 'pull', 'push'] })).toBe(
      'repository:app:pull,push',
    );
  });
});

describe('parseScopes', () => {
  it('merges scopes for the same resource', () => {
    expect(parseScopes(['repository:a:pull', 'repository:b:pull', 'repository:a:push'])).toEqual([
      { type: 'repository', name: 'a', actions: ['pull', 'push'] },
      { type: 'repository', name: 'b', actions: ['pull'] },
    ]);
  });

  it('splits space-separated scopes and drops invalid ones', () => {
    expect(
      parseScopes(['repository:a:pull  registry:catalog:*', 'bogus', 'repository(plugin):a:delete']),
    ).toEqual([
      { type: 'repository', name: 'a', actions: ['pull', 'delete'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
  });

  it('returns nothing for no scopes', () => {
    expect(parseScopes([])).toEqual([]);
    expect(parseScopes([' '])).toEqual([]);
  });
});
