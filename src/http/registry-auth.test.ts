import { describe, expect, it } from 'vitest';
import { needOf } from './registry-auth.ts';

describe('needOf: what a /v2 request needs', () => {
  it.each([
    ['GET', '/v2/', { kind: 'base' }],
    ['GET', '/v2', { kind: 'base' }],
    ['GET', '/v2/_catalog', { kind: 'catalog' }],
    ['GET', '/v2/a/b/tags/list', { kind: 'repository', name: 'a/b', action: 'pull', extra: 'tags' }],
    [
      'GET',
      '/v2/a/referrers/sha256:x',
      { kind: 'repository', name: 'a', action: 'pull', extra: 'referrers' },
    ],
    ['HEAD', '/v2/a/manifests/v1', { kind: 'repository', name: 'a', action: 'pull' }],
    ['PUT', '/v2/a/manifests/v1', { kind: 'repository', name: 'a', action: 'push' }],
    ['DELETE', '/v2/a/manifests/v1', { kind: 'repository', name: 'a', action: 'delete' }],
    ['GET', '/v2/a/blobs/sha256:x', { kind: 'repository', name: 'a', action: 'pull' }],
    ['DELETE', '/v2/a/blobs/sha256:x', { kind: 'repository', name: 'a', action: 'delete' }],
    ['POST', '/v2/a/blobs/uploads/', { kind: 'repository', name: 'a', action: 'push' }],
    ['PATCH', '/v2/a/blobs/uploads/u1', { kind: 'repository', name: 'a', action: 'push' }],
    // Cancelling an upload is part of pushing, not a delete.
    ['DELETE', '/v2/a/blobs/uploads/u1', { kind: 'repository', name: 'a', action: 'push' }],
    // Repository names may contain the route words themselves.
    ['GET', '/v2/x/blobs/y/manifests/latest', { kind: 'repository', name: 'x/blobs/y', action: 'pull' }],
    [
      'GET',
      '/v2/x/manifests/y/tags/list',
      { kind: 'repository', name: 'x/manifests/y', action: 'pull', extra: 'tags' },
    ],
  ])('%s %s', (method, path, need) => {
    expect(needOf(method, path)).toEqual(need);
  });

  it('has no need for paths no route serves (they answer 404)', () => {
    expect(needOf('GET', '/v2/a/unknown')).toBeUndefined();
    expect(needOf('GET', '/v2/a/blobs/uploads/u1/extra')).toBeUndefined();
  });
});
