import { describe, expect, it } from 'vitest';
import { byCodeUnit, maxPageSize, paginate } from './pagination.ts';

const tags = ['1.0', '1.1', '2.0', 'latest', 'v1'];

describe('paginate', () => {
  it('returns everything without n or last', () => {
    expect(paginate(tags, undefined, undefined)).toEqual({ items: tags });
  });
  it('returns exactly n with a next marker while more remain', () => {
    expect(paginate(tags, 2, undefined)).toEqual({ items: ['1.0', '1.1'], next: '1.1' });
    expect(paginate(tags, 2, '1.1')).toEqual({ items: ['2.0', 'latest'], next: 'latest' });
    expect(paginate(tags, 2, 'latest')).toEqual({ items: ['v1'] });
  });
  it('treats last as exclusive even when it is not in the list', () => {
    expect(paginate(tags, 10, '1.05')).toEqual({ items: ['1.1', '2.0', 'latest', 'v1'] });
    expect(paginate(tags, 10, 'zzz')).toEqual({ items: [] });
  });
  it('gives an empty page for n=0', () => {
    expect(paginate(tags, 0, undefined)).toEqual({ items: [] });
  });
  it('has no next marker when the page ends exactly at the end', () => {
    expect(paginate(tags, 5, undefined)).toEqual({ items: tags });
  });
  it('clamps huge n', () => {
    const many = Array.from({ length: maxPageSize + 5 }, (_, i) => String(i).padStart(6, '0'));
    const page = paginate(many, 1e9, undefined);
    expect(page.items.length).toBe(maxPageSize);
    expect(page.next).toBe(many[maxPageSize - 1]);
  });
  it('sorts by code unit, not locale', () => {
    expect(['b', 'B', 'a', '_'].sort(byCodeUnit)).toEqual(['B', '_', 'a', 'b']);
  });
});
