// The Condition element of a policy statement: validation (so a typo is an error when the policy
// is saved, not a silent non-match at request time) and compilation to a predicate over the request
// context. Semantics follow IAM; where IAM is ambiguous the choice is stated beside the code.

/** Condition values are kept as strings, as IAM does; JSON numbers and booleans are converted. */
export type ConditionBlock = Readonly<Record<string, Readonly<Record<string, readonly string[]>>>>;

export type ContextValue = string | readonly string[] | undefined;
export type RequestContext = Readonly<Record<string, ContextValue>>;
/** Context keys lower-cased; absent and empty keys are left out, so "present" means "has a value". */
export type NormalizedContext = ReadonlyMap<string, readonly string[]>;

/** A validation failure: `path` locates it in the document, `message` repeats the path for humans. */
export interface PolicyError {
  readonly path: string;
  readonly message: string;
}

export function policyError(path: string, text: string): PolicyError {
  return { path, message: path ? `${path}: ${text}` : text };
}
const err = policyError;

// ---- globs --------------------------------------------------------------------------------------

const regExpSyntax = /[\\^$.*+?()[\]{}|/]/g;
const anyChar = '[\\s\\S]';
const literal = (part: string) =>
  part
    .split('?')
    .map((lit) => lit.replace(regExpSyntax, '\\$&'))
    .join(anyChar);

function globSource(pattern: string, groups: { n: number }): string {
  const parts = pattern.split('*');
  if (parts.length === 1) return literal(pattern);
  let source = literal(parts[0] ?? '');
  for (const middle of parts.slice(1, -1)) {
    if (middle === '') continue;
    groups.n++;
    // The naive `.*a.*a.*b` backtracks polynomially in the number of stars, so anyone who can write
    // a policy could stall evaluation. A lookahead is atomic: this takes the leftmost occurrence
    // and never revisits it, which is always safe because the next `*` absorbs whatever it skips.
    source += `(?=(${anyChar}*?${literal(middle)}))(?:\\${groups.n})`;
  }
  return `${source}${anyChar}*${literal(parts.at(-1) ?? '')}`;
}

/**
 * One anchored RegExp matching any of the `*`/`?` globs. `*` is any run of characters including
 * `/`, `?` exactly one; nothing else is special, so a policy cannot smuggle RegExp syntax in.
 */
export function globToRegExp(patterns: string | readonly string[], ignoreCase = false): RegExp {
  const groups = { n: 0 };
  const alternatives = (typeof patterns === 'string' ? [patterns] : patterns).map((p) =>
    globSource(p, groups),
  );
  return new RegExp(`^(?:${alternatives.join('|')})$`, ignoreCase ? 'iu' : 'u');
}

// ---- operators ----------------------------------------------------------------------------------

type ValueKind = 'string' | 'stringIgnoreCase' | 'like' | 'numeric' | 'date' | 'bool' | 'ip' | 'null';
type Comparison = 'eq' | 'lt' | 'lte' | 'gt' | 'gte';

interface BaseOperator {
  readonly kind: ValueKind;
  readonly cmp: Comparison;
  /** Negated operators are NOT(any value matches), which is also why they hold for an absent key. */
  readonly negated: boolean;
}

const op = (kind: ValueKind, cmp: Comparison = 'eq', negated = false): BaseOperator => ({
  kind,
  cmp,
  negated,
});

const baseOperators: Readonly<Record<string, BaseOperator>> = {
  StringEquals: op('string'),
  StringNotEquals: op('string', 'eq', true),
  StringEqualsIgnoreCase: op('stringIgnoreCase'),
  StringNotEqualsIgnoreCase: op('stringIgnoreCase', 'eq', true),
  StringLike: op('like'),
  StringNotLike: op('like', 'eq', true),
  NumericEquals: op('numeric'),
  NumericNotEquals: op('numeric', 'eq', true),
  NumericLessThan: op('numeric', 'lt'),
  NumericLessThanEquals: op('numeric', 'lte'),
  NumericGreaterThan: op('numeric', 'gt'),
  NumericGreaterThanEquals: op('numeric', 'gte'),
  DateEquals: op('date'),
  DateNotEquals: op('date', 'eq', true),
  DateLessThan: op('date', 'lt'),
  DateLessThanEquals: op('date', 'lte'),
  DateGreaterThan: op('date', 'gt'),
  DateGreaterThanEquals: op('date', 'gte'),
  Bool: op('bool'),
  IpAddress: op('ip'),
  NotIpAddress: op('ip', 'eq', true),
  Null: op('null'),
};

export const conditionOperators: readonly string[] = Object.keys(baseOperators);

interface ParsedOperator {
  readonly qualifier: 'ForAnyValue' | 'ForAllValues' | undefined;
  readonly base: BaseOperator;
  readonly ifExists: boolean;
}

/** Operator names are case-sensitive, as in IAM. Null takes neither IfExists nor a qualifier. */
function parseOperator(name: string): ParsedOperator | undefined {
  const q = /^(ForAnyValue|ForAllValues):/.exec(name);
  const qualifier = q ? (q[1] as 'ForAnyValue' | 'ForAllValues') : undefined;
  let rest = q ? name.slice(q[0].length) : name;
  const ifExists = rest.endsWith('IfExists');
  if (ifExists) rest = rest.slice(0, -'IfExists'.length);
  const base = Object.hasOwn(baseOperators, rest) ? baseOperators[rest] : undefined;
  if (base === undefined || (base.kind === 'null' && (ifExists || qualifier))) return undefined;
  return { qualifier, base, ifExists };
}

// ---- keys ---------------------------------------------------------------------------------------

const enumeratedKeys: ReadonlyMap<string, readonly string[]> = new Map([
  ['berth:principaltype', ['user', 'serviceaccount', 'role', 'anonymous']],
  ['berth:authmethod', ['password', 'accesskey', 'oidc', 'token', 'anonymous']],
]);

const fixedKeys: ReadonlySet<string> = new Set([
  'berth:sourceip',
  'berth:currenttime',
  'berth:epochtime',
  'berth:securetransport',
  'berth:principalname',
  'berth:principalgroups',
  'berth:tag',
  'berth:repository',
  ...enumeratedKeys.keys(),
]);

/** Condition keys are case-insensitive; the open families are principal tags and OIDC claims. */
export function isKnownConditionKey(key: string): boolean {
  const k = key.toLowerCase();
  if (fixedKeys.has(k)) return true;
  const open = /^(?:berth:principaltag\/|oidc:)(.*)$/.exec(k);
  return open !== null && /^[^\s]+$/.test(open[1] ?? '');
}

// ---- values -------------------------------------------------------------------------------------

function parseNumber(s: string): number | undefined {
  return /^-?\d+(?:\.\d+)?$/.test(s) ? Number(s) : undefined;
}

const isoDate = /^(\d{4})-(\d{2})-(\d{2})(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?$/;

/** Milliseconds since the epoch from ISO 8601 (UTC unless an offset is given) or epoch seconds. */
export function parseDate(s: string): number | undefined {
  if (/^\d{1,12}$/.test(s)) return Number(s) * 1000;
  const m = isoDate.exec(s);
  if (!m) return undefined;
  // A date-time without an offset would be local time to Date.parse; policies mean UTC.
  const hasTime = s.includes('T');
  const ms = Date.parse(hasTime && m[4] === undefined ? s + 'Z' : s);
  if (Number.isNaN(ms)) return undefined;
  // Date.parse rolls 2026-02-30 over into March; a policy author meant a real day.
  const check = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  if (check.getUTCMonth() !== Number(m[2]) - 1 || check.getUTCDate() !== Number(m[3])) return undefined;
  return ms;
}

function parseBool(s: string): boolean | undefined {
  const l = s.toLowerCase();
  return l === 'true' ? true : l === 'false' ? false : undefined;
}

function parseIpv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0n;
  for (const p of parts) {
    // Leading zeros are refused: some stacks read them as octal, so their meaning is ambiguous.
    if (!/^(?:0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255) return undefined;
    n = (n << 8n) | BigInt(p);
  }
  return n;
}

function parseIpv6(s: string): bigint | undefined {
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string | undefined): bigint[] | undefined => {
    if (h === undefined || h === '') return [];
    const out: bigint[] = [];
    const parts = h.split(':');
    for (const [i, p] of parts.entries()) {
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIpv4(p);
        if (v4 === undefined) return undefined;
        out.push(v4 >> 16n, v4 & 0xffffn);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) out.push(BigInt('0x' + p));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (head === undefined || tail === undefined) return undefined;
  // An embedded IPv4 address may only end the address.
  if (halves.length === 2 && halves[0]?.includes('.')) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  let n = 0n;
  for (const g of [...head, ...Array<bigint>(missing).fill(0n), ...tail]) n = (n << 16n) | g;
  return n;
}

const v4MappedPrefix = 0xffffn << 32n;

/**
 * An address as a 128-bit number, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d). A dual-stack socket
 * reports IPv4 clients in mapped form, so both spellings of a client must land on the same number.
 */
export function parseIp(s: string): bigint | undefined {
  if (!s.includes(':')) {
    const v4 = parseIpv4(s);
    return v4 === undefined ? undefined : v4MappedPrefix | v4;
  }
  return parseIpv6(s);
}

export interface Cidr {
  readonly net: bigint;
  readonly mask: bigint;
}

export function parseCidr(s: string): Cidr | undefined {
  const [addr = '', prefix, extra] = s.split('/');
  if (extra !== undefined) return undefined;
  const ip = parseIp(addr);
  if (ip === undefined) return undefined;
  const width = addr.includes(':') ? 128 : 32;
  let bits = width;
  if (prefix !== undefined) {
    if (!/^(?:0|[1-9]\d{0,2})$/.test(prefix) || Number(prefix) > width) return undefined;
    bits = Number(prefix);
  }
  const len = BigInt(bits + 128 - width);
  const mask = len === 0n ? 0n : ((1n << len) - 1n) << (128n - len);
  return { net: ip & mask, mask };
}

const valueParsers: Readonly<Record<ValueKind, { parse: (s: string) => unknown; what: string } | undefined>> =
  {
    string: undefined,
    stringIgnoreCase: undefined,
    like: undefined,
    numeric: { parse: parseNumber, what: 'number' },
    date: { parse: parseDate, what: 'date' },
    bool: { parse: parseBool, what: 'boolean' },
    null: { parse: parseBool, what: 'boolean' },
    ip: { parse: parseCidr, what: 'IP address or CIDR' },
  };

// ---- validation ---------------------------------------------------------------------------------

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function scalar(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if ((typeof v === 'number' && Number.isFinite(v)) || typeof v === 'boolean') return String(v);
  return undefined;
}

function validateValues(
  raw: unknown,
  path: string,
  base: BaseOperator,
  key: string,
  errors: PolicyError[],
): string[] | undefined {
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0 || list.some((v) => scalar(v) === undefined)) {
    errors.push(err(path, 'must be a string, number, boolean or a non-empty array of them'));
    return undefined;
  }
  const values = list.map((v) => scalar(v) ?? '');
  const parser = valueParsers[base.kind];
  const allowed =
    base.kind === 'string' || base.kind === 'stringIgnoreCase' ? enumeratedKeys.get(key) : undefined;
  let ok = true;
  for (const [i, v] of values.entries()) {
    const at = Array.isArray(raw) ? `${path}[${i}]` : path;
    if (parser && parser.parse(v) === undefined) {
      errors.push(err(at, `malformed ${parser.what} ${JSON.stringify(v)}`));
      ok = false;
    } else if (allowed && !allowed.includes(base.kind === 'string' ? v : v.toLowerCase())) {
      errors.push(err(at, `${JSON.stringify(v)} is not one of ${allowed.join(', ')}`));
      ok = false;
    }
  }
  return ok ? values : undefined;
}

/** Checks a Condition element, pushing errors; returns it normalized when it is valid. */
export function validateCondition(
  raw: unknown,
  path: string,
  errors: PolicyError[],
): ConditionBlock | undefined {
  if (!isObject(raw) || Object.keys(raw).length === 0) {
    errors.push(err(path, 'must be a non-empty object of condition operators'));
    return undefined;
  }
  const before = errors.length;
  const block: Record<string, Record<string, string[]>> = {};
  for (const [name, keys] of Object.entries(raw)) {
    const parsed = parseOperator(name);
    if (!parsed) {
      errors.push(err(path, `unknown operator ${JSON.stringify(name)}`));
      continue;
    }
    const opPath = `${path}.${name}`;
    if (!isObject(keys) || Object.keys(keys).length === 0) {
      errors.push(err(opPath, 'must be a non-empty object of condition keys'));
      continue;
    }
    const out: Record<string, string[]> = {};
    for (const [key, value] of Object.entries(keys)) {
      if (!isKnownConditionKey(key)) {
        errors.push(err(opPath, `unknown condition key ${JSON.stringify(key)}`));
        continue;
      }
      const values = validateValues(
        value,
        `${opPath}[${JSON.stringify(key)}]`,
        parsed.base,
        key.toLowerCase(),
        errors,
      );
      if (values) out[key] = values;
    }
    block[name] = out;
  }
  return errors.length === before ? block : undefined;
}

// ---- evaluation ---------------------------------------------------------------------------------

export function normalizeContext(context: RequestContext): Map<string, readonly string[]> {
  const out = new Map<string, readonly string[]>();
  for (const [key, value] of Object.entries(context)) {
    const values = value === undefined ? [] : typeof value === 'string' ? [value] : [...value];
    if (values.length === 0) continue;
    // Keys differing only in case are one key, so their values form one set.
    const k = key.toLowerCase();
    out.set(k, [...(out.get(k) ?? []), ...values]);
  }
  return out;
}

function compare(cmp: Comparison, a: number, b: number): boolean {
  switch (cmp) {
    case 'eq':
      return a === b;
    case 'lt':
      return a < b;
    case 'lte':
      return a <= b;
    case 'gt':
      return a > b;
    case 'gte':
      return a >= b;
  }
}

/** Whether one request value matches any of the policy values (the un-negated sense). */
function compileMatcher(base: BaseOperator, values: readonly string[]): (v: string) => boolean {
  switch (base.kind) {
    case 'string': {
      const set = new Set(values);
      return (v) => set.has(v);
    }
    case 'stringIgnoreCase': {
      const set = new Set(values.map((v) => v.toLowerCase()));
      return (v) => set.has(v.toLowerCase());
    }
    case 'like': {
      const re = globToRegExp(values);
      return (v) => re.test(v);
    }
    case 'numeric':
    case 'date': {
      const parse = base.kind === 'numeric' ? parseNumber : parseDate;
      const wanted = values.map((v) => parse(v) ?? Number.NaN);
      return (v) => {
        const n = parse(v);
        return n !== undefined && wanted.some((w) => compare(base.cmp, n, w));
      };
    }
    case 'bool':
    case 'null': {
      const wanted = values.map(parseBool);
      return (v) => wanted.includes(parseBool(v));
    }
    case 'ip': {
      const cidrs = values.map(parseCidr).filter((c) => c !== undefined);
      return (v) => {
        const ip = parseIp(v);
        return ip !== undefined && cidrs.some((c) => (ip & c.mask) === c.net);
      };
    }
  }
}

export type ContextTest = (ctx: NormalizedContext) => boolean;

// Multi-valued keys without a qualifier follow IAM: a positive operator holds if ANY request
// value matches ANY policy value; a negated one is the NOT of that (no request value matches).
function compileKeyTest(parsed: ParsedOperator, key: string, values: readonly string[]): ContextTest {
  const { base, qualifier, ifExists } = parsed;
  if (base.kind === 'null') {
    const wantAbsent = values.map(parseBool);
    return (ctx) => wantAbsent.includes(!ctx.has(key));
  }
  const matches = compileMatcher(base, values);
  const satisfies = base.negated ? (v: string) => !matches(v) : matches;
  return (ctx) => {
    const present = ctx.get(key);
    if (present === undefined) {
      if (ifExists || qualifier === 'ForAllValues') return true;
      return qualifier === 'ForAnyValue' ? false : base.negated;
    }
    if (qualifier === 'ForAllValues') return present.every(satisfies);
    if (qualifier === 'ForAnyValue') return present.some(satisfies);
    return base.negated ? !present.some(matches) : present.some(matches);
  };
}

/** A predicate over the normalized context: every operator, and every key under it, must hold. */
export function compileCondition(block: ConditionBlock): ContextTest {
  const tests: ContextTest[] = [];
  for (const [name, keys] of Object.entries(block)) {
    const parsed = parseOperator(name);
    if (!parsed) throw new Error(`unvalidated condition operator ${name}`);
    for (const [key, values] of Object.entries(keys))
      tests.push(compileKeyTest(parsed, key.toLowerCase(), values));
  }
  return (ctx) => tests.every((t) => t(ctx));
}
