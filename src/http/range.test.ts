import { describe, expect, it } from 'vitest';
import { contentRange, parseRange, parseUploadContentRange } from './range.ts';

describe('parseRange', () => {
  const size = 100;
  it('ignores a missing or unparseable header', () => {
    expect(parseRange(undefined, size)).toEqual({ kind: 'none' });
    expect(parseRange('items=0-1', size)).toEqual({ kind: 'none' });
    expect(parseRange('bytes=0-1,5-6', size)).toEqual({ kind: 'none' });
    expect(parseRange('bytes=-', size)).toEqual({ kind: 'none' });
    expect(parseRange('bytes=5-2', size)).toEqual({ kind: 'none' });
  });
  it('serves bytes=a-b, clamping b to the end', () => {
    expect(parseRange('bytes=0-9', size)).toEqual({ kind: 'partial', range: { start: 0, end: 9 } });
    expect(parseRange('bytes=90-500', size)).toEqual({ kind: 'partial', range: { start: 90, end: 99 } });
    expect(parseRange('bytes=99-99', size)).toEqual({ kind: 'partial', range: { start: 99, end: 99 } });
  });
  it('serves bytes=a- to the end', () => {
    expect(parseRange('bytes=40-', size)).toEqual({ kind: 'partial', range: { start: 40, end: 99 } });
  });
  it('serves suffix ranges bytes=-n', () => {
    expect(parseRange('bytes=-10', size)).toEqual({ kind: 'partial', range: { start: 90, end: 99 } });
    expect(parseRange('bytes=-1000', size)).toEqual({ kind: 'partial', range: { start: 0, end: 99 } });
  });
  it('answers 416 for ranges past the end, empty suffixes and empty blobs', () => {
    expect(parseRange('bytes=100-', size)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=100-200', size)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=-0', size)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=-5', 0)).toEqual({ kind: 'unsatisfiable' });
  });
  it('formats Content-Range', () => {
    expect(contentRange({ start: 90, end: 99 }, 100)).toBe('bytes 90-99/100');
  });
});

describe('parseUploadContentRange', () => {
  it('accepts the spec form and the bytes form', () => {
    expect(parseUploadContentRange('0-1023')).toEqual({ start: 0, end: 1023 });
    expect(parseUploadContentRange('bytes 1024-2047/*')).toEqual({ start: 1024, end: 2047 });
    expect(parseUploadContentRange('bytes=0-9/10')).toEqual({ start: 0, end: 9 });
  });
  it('rejects malformed ranges', () => {
    expect(parseUploadContentRange('abc')).toBeUndefined();
    expect(parseUploadContentRange('10-5')).toBeUndefined();
    expect(parseUploadContentRange('-5')).toBeUndefined();
  });
});
