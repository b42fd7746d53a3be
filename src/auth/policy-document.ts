// The envelope every policy document shares, identity, repository and trust policies alike:
// JSON text or a parsed value, a size limit, Version, Id and a Statement (one or a list), and
// Sids unique within the document. Each kind validates its own statements.
import { policyError as err, type PolicyError } from './conditions.ts';

export const policyVersion = '2012-10-17';
export const maxPolicyBytes = 32 * 1024;
export const maxStatements = 100;

export type DocumentResult<S> =
  | { ok: true; statements: S[]; id?: string }
  | { ok: false; errors: PolicyError[] };

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Parses and checks the envelope, handing each statement with its path (`Statement[2]`, or
 * `Statement` when there is just one object) to `statement`, which reports into `errors`.
 */
export function parseDocument<S>(
  doc: unknown,
  what: string,
  statement: (raw: unknown, path: string, errors: PolicyError[]) => S | undefined,
): DocumentResult<S> {
  let json: string;
  try {
    json = typeof doc === 'string' ? doc : JSON.stringify(doc);
    if (typeof doc === 'string') doc = JSON.parse(doc);
  } catch {
    return { ok: false, errors: [err('', `${what} is not valid JSON`)] };
  }
  const bytes = new TextEncoder().encode(json ?? '').length;
  if (bytes > maxPolicyBytes)
    return {
      ok: false,
      errors: [err('', `${what} is ${bytes} bytes of JSON, more than the ${maxPolicyBytes} allowed`)],
    };
  if (!isObject(doc)) return { ok: false, errors: [err('', `${what} must be a JSON object`)] };

  const errors: PolicyError[] = [];
  for (const k of Object.keys(doc))
    if (k !== 'Version' && k !== 'Id' && k !== 'Statement')
      errors.push(err('', `unknown top-level key ${JSON.stringify(k)}`));
  if (doc['Version'] !== policyVersion) errors.push(err('Version', `must be "${policyVersion}"`));
  if (Object.hasOwn(doc, 'Id') && typeof doc['Id'] !== 'string') errors.push(err('Id', 'must be a string'));

  const rawStatements = doc['Statement'];
  const list = Array.isArray(rawStatements) ? rawStatements : isObject(rawStatements) ? [rawStatements] : [];
  if (list.length === 0)
    errors.push(err('Statement', 'must be a statement or a non-empty array of statements'));
  if (list.length > maxStatements)
    return {
      ok: false,
      errors: [
        ...errors,
        err('Statement', `has ${list.length} statements, at most ${maxStatements} are allowed`),
      ],
    };

  const statements: S[] = [];
  const sids = new Map<string, number>();
  for (const [i, raw] of list.entries()) {
    const path = Array.isArray(rawStatements) ? `Statement[${i}]` : 'Statement';
    const s = statement(raw, path, errors);
    if (s) statements.push(s);
    const sid = isObject(raw) ? raw['Sid'] : undefined;
    if (typeof sid !== 'string') continue;
    const first = sids.get(sid);
    if (first === undefined) sids.set(sid, i);
    else errors.push(err(`${path}.Sid`, `duplicate Sid ${JSON.stringify(sid)} (also Statement[${first}])`));
  }
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, statements, ...(typeof doc['Id'] === 'string' ? { id: doc['Id'] } : {}) };
}

export function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

/** A string or non-empty array of strings, each checked by `check` (which returns an error text). */
export function stringList(
  raw: unknown,
  path: string,
  errors: PolicyError[],
  check: (s: string) => string | undefined,
): string[] | undefined {
  if (!(typeof raw === 'string' || (Array.isArray(raw) && raw.length > 0))) {
    errors.push(err(path, 'must be a string or a non-empty array of strings'));
    return undefined;
  }
  const list: unknown[] = Array.isArray(raw) ? raw : [raw];
  const before = errors.length;
  for (const [i, v] of list.entries()) {
    const at = Array.isArray(raw) ? `${path}[${i}]` : path;
    const problem = typeof v === 'string' ? check(v) : 'must be a string';
    if (problem) errors.push(err(at, problem));
  }
  return errors.length === before ? (list as string[]) : undefined;
}
