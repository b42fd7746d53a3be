// What ends an access token before it expires. Access tokens are decided from their claims (see
// service.ts), so every change that can narrow what a principal may do is recorded here, and a
// token issued before it is refused on its next use; the client fetches a new token, whose grant
// reflects the change.
//
// Each change is a revision: a number that only grows (milliseconds since the epoch, or one more
// than the last revision when the clock has not moved on), assigned to the subjects it narrows:
//
//   user/alice  serviceaccount/ci  role/deployer   a principal's own tokens
//   group/devs                                      tokens whose groups claim names the group
//   accesskey/BK...                                 tokens of sessions begun with the key
//   *                                               every token (a repository policy narrowed)
//
// A token carries the revision current when the identity it was issued for was authenticated, so
// a change that lands between sign-in and issue (a grant decided on the old policies) still counts
// as after it. A token is stale when any subject it speaks for has a later revision.
//
// The state is small and kept whole in memory (one map lookup per subject, and only when
// something changed since a token was last checked); it is written to /auth/revocations.json
// after every change, so a token does not come back to life across a restart. Entries older
// than `horizonMs` (longer than any token lives) are dropped; the newest revision dropped becomes
// the floor, and tokens carrying an older revision are stale, so dropping never revives one.
import type { Logger } from '../log.ts';
import type { StorageDriver } from '../storage/index.ts';
import type { Policy, Statement } from './policy.ts';
import { isRecord, readJson, writeJson } from './store.ts';

export const revocationsPath = '/auth/revocations.json';

export interface Revocations {
  /** Reads the stored state; the revisions assigned from then on are later than any stored. */
  load(): Promise<void>;
  /** The revision a token issued for an identity authenticated now carries. */
  current(): number;
  /**
   * Tokens of these subjects carrying a revision before now are stale from this call on (in
   * memory at once); resolves when the change is stored.
   */
  revoke(subjects: readonly string[]): Promise<void>;
  /** The first of `subjects` revoked after `revision` (or `*` for the floor), undefined if none. */
  revokedAfter(revision: number, subjects: readonly string[]): string | undefined;
}

interface Stored {
  revision: number;
  floor: number;
  subjects: Record<string, number>;
}

export function createRevocations(opts: {
  storage: StorageDriver;
  now: () => number;
  /** How long an entry must be kept: longer than any access token lives. */
  horizonMs: number;
  log: Logger;
}): Revocations {
  const { storage, now, horizonMs, log } = opts;
  let revision = 0;
  let floor = 0;
  const bySubject = new Map<string, number>();
  let queue: Promise<unknown> = Promise.resolve();

  function prune(): void {
    const cutoff = now() - horizonMs;
    for (const [subject, r] of bySubject)
      if (r < cutoff) {
        bySubject.delete(subject);
        if (r > floor) floor = r;
      }
  }

  function save(): Promise<void> {
    const doc: Stored = { revision, floor, subjects: Object.fromEntries(bySubject) };
    // Writes queue up in order, and the last one holds every change before it.
    const run = queue.then(() => writeJson(storage, revocationsPath, doc));
    queue = run.catch(() => {});
    return run;
  }

  return {
    async load() {
      let doc: unknown;
      try {
        doc = await readJson(storage, revocationsPath);
      } catch (err) {
        // Storage errors stop the start, as they do for identities; a document that is not JSON
        // is handled below.
        if (!(err instanceof SyntaxError)) throw err;
        doc = null;
      }
      if (doc !== undefined) {
        const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
        const subjects = isRecord(doc) && isRecord(doc['subjects']) ? doc['subjects'] : undefined;
        const stored = isRecord(doc) ? [num(doc['revision']), num(doc['floor'])] : [];
        if (!subjects || stored.some((n) => n === undefined)) {
          // Fail closed: what was revoked is unknown, so every token issued before now is stale.
          log.error(
            { path: revocationsPath },
            'revocations: malformed record; every earlier token is refused',
          );
          floor = Math.max(floor, now());
        } else {
          revision = Math.max(revision, stored[0] as number);
          floor = Math.max(floor, stored[1] as number);
          for (const [subject, r] of Object.entries(subjects)) {
            const n = num(r);
            if (n === undefined) floor = Math.max(floor, now());
            else bySubject.set(subject, Math.max(bySubject.get(subject) ?? 0, n));
          }
        }
      }
      // Revocations made before a crash but never stored are lost; revisions taken from now on
      // must still be later than any a token of that time carries: the clock is past them.
      revision = Math.max(revision, floor, now());
    },

    current: () => revision,

    revoke(subjects) {
      if (subjects.length === 0) return Promise.resolve();
      revision = Math.max(revision + 1, now());
      for (const s of subjects) bySubject.set(s, revision);
      prune();
      return save();
    },

    revokedAfter(r, subjects) {
      if (r < floor) return '*';
      for (const s of subjects) if ((bySubject.get(s) ?? Number.NEGATIVE_INFINITY) > r) return s;
      return undefined;
    },
  };
}

// ---- which policy changes narrow ----------------------------------------------------------------

/** JSON with object keys sorted, so two validated statements compare by their text. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isRecord(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

const withEffect = (p: Policy | undefined, effect: Statement['Effect']) =>
  new Set((p?.Statement ?? []).filter((s) => s.Effect === effect).map(canonical));

/**
 * Whether replacing policy `before` by `after` (undefined: no policy) can only widen what it
 * allows. Evaluation is monotone: an explicit Deny wins, then any Allow, so adding an Allow or
 * removing a Deny never takes a right away. Anything else (an Allow removed or changed, a Deny
 * added or changed) may narrow. `undefined` for a policy that does not validate counts as
 * unknown: the change narrows.
 */
export function onlyWidens(before: Policy | undefined | null, after: Policy | undefined | null): boolean {
  if (before === null || after === null) return false;
  const kept = withEffect(after, 'Allow');
  for (const s of withEffect(before, 'Allow')) if (!kept.has(s)) return false;
  const had = withEffect(before, 'Deny');
  for (const s of withEffect(after, 'Deny')) if (!had.has(s)) return false;
  return true;
}

/** Whether a policy has a statement of this effect; an unvalidated policy (null) may have. */
export function hasEffect(p: Policy | null, effect: Statement['Effect']): boolean {
  return p === null || p.Statement.some((s) => s.Effect === effect);
}
