import { describe, expect, it } from 'vitest';
import { isValidPath } from './checked.ts';

describe('storage path grammar', () => {
  it.each(['/', '/a', '/blobs/sha256/ab/abcdef/data', '/catalog/team~app', '/_uploads/x-y_z.1'])(
    'accepts %s',
    (p) => {
      expect(isValidPath(p)).toBe(true);
    },
  );
  it.each([
    '',
    'a',
    '//',
    '/a/',
    '/a//b',
    '/.',
    '/..',
    '/a/../b',
    '/.hidden',
    '/a/-dash-first',
    '/a b',
    '/a\\b',
    '/a\u0000',
    '/ä',
    `/${'a'.repeat(4100)}`,
  ])('refuses %j', (p) => {
    expect(isValidPath(p)).toBe(false);
  });
});
