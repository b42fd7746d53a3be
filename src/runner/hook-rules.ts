// Push-hook rules as data: their shape, their validation (with messages that name the field and
// say what would be accepted), and the pure matching an event goes through before any rule runs.
// No storage and no clock here; hooks.ts owns persistence and the dispatch order.
//
// A rule names repositories with a glob (`*` stays within a path segment, `**` spans segments,
// `?` is one character) and tags with a pattern:
//   - `semver:<range>`: tags that are semantic versions (optionally `v`-prefixed) within an
//     npm-style range (`semver:^1.2`, `semver:>=1.0.0 <2.0.0`, `semver:~1.4`, `semver:1.x`);
//   - a pattern with `*` or `?`: a glob over the tag (`release-*`);
//   - anything else: exactly that tag (`latest`).
// `1.x` without the prefix is the literal tag "1.x" (a valid tag name), never a range, so what a
// rule matches can be told from the pattern alone.
//
// A rule acts as the role `roleArn` names, as an EventBridge rule acts with its RoleArn: the rights
// it acts with are that role's, checked when the rule is written and again on every run
// (hook-rights.ts). Rules stored before rules had roles load without one and never act.

import type { ManifestPushed } from '../events.ts';
import { DEFAULT_CLUSTER, type TaskOverride } from './model.ts';
import { compareVersions, parseRange, parseVersion, type SemVer, SemverError, satisfies } from './semver.ts';

export interface RunTaskAction {
  readonly type: 'runTask';
  readonly cluster: string;
  /** A family (its latest ACTIVE revision), family:revision, or a task-definition ARN. */
  readonly taskDefinition: string;
  /** 1..10, as RunTask allows. */
  readonly count: number;
  readonly overrides?: TaskOverride;
}

export interface RollServiceAction {
  readonly type: 'rollService';
  readonly cluster: string;
  readonly service: string;
}

export type HookAction = RunTaskAction | RollServiceAction;

export interface HookRule {
  readonly id: string;
  readonly name: string;
  /** Repository glob. */
  readonly repository: string;
  /** Tag pattern: `semver:<range>`, a glob, or an exact tag. */
  readonly tag: string;
  /** Semver patterns only: run only for a version higher than any this rule ran for in the repository. */
  readonly newerOnly: boolean;
  readonly enabled: boolean;
  /**
   * `arn:aws:iam::ACCOUNT:role/NAME`: the berth role whose rights the rule acts with. Required of
   * every enabled rule; absent only on rules stored before rules had roles, which never act.
   */
  readonly roleArn?: string;
  readonly action: HookAction;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** The fields a client sets; the rest (id, timestamps) are the store's. */
export type HookRuleFields = Omit<HookRule, 'id' | 'createdAt' | 'updatedAt'>;

export type HookErrorCode = 'INVALID' | 'NOT_FOUND' | 'FORBIDDEN';

/** A request about rules or runs that cannot be served; `message` is fit to show the client. */
export class HookError extends Error {
  readonly code: HookErrorCode;
  /** For INVALID and FORBIDDEN: the field at fault, dotted (`action.count`, `roleArn`). */
  readonly field: string | undefined;
  constructor(code: HookErrorCode, message: string, field?: string) {
    super(message);
    this.name = 'HookError';
    this.code = code;
    this.field = field;
  }
}

const invalid = (field: string, message: string) => new HookError('INVALID', `${field}: ${message}`, field);

/**
 * A run the rule's role may not carry out (or a rule with no role): recorded on the run as
 * `denied`, with this message as its reason; nothing was started.
 */
export class HookDenied extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HookDenied';
  }
}

// ---- repository globs ---------------------------------------------------------------------------

/** The distribution spec's repository name grammar, one path component. */
const nameComponent = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const globComponent = /^[a-z0-9._*?-]+$/;

/** Why a repository glob is unusable, or undefined when it is fine. */
function repositoryGlobProblem(glob: string): string | undefined {
  if (glob === '') return 'must not be empty';
  if (glob.length > 255) return 'must be at most 255 characters';
  for (const segment of glob.split('/')) {
    if (segment === '') return `"${glob}" has an empty path segment`;
    if (segment === '**') continue;
    if (segment.includes('**')) return `"${glob}": '**' must be a whole path segment (as in "team/**/api")`;
    if (!globComponent.test(segment)) {
      return `"${segment}" in "${glob}" may only hold lowercase letters, digits, '.', '_', '-' and the wildcards '*' and '?'`;
    }
    if (!/[*?]/.test(segment) && !nameComponent.test(segment)) {
      return `"${segment}" in "${glob}" is not a valid repository name component`;
    }
  }
  return undefined;
}

/** `*` and `?` within a path segment, `**` as a segment spans zero or more segments (one or more at the end). */
export function compileRepositoryGlob(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; ) {
    if (glob.startsWith('**/', i)) {
      out += '(?:[^/]+/)*';
      i += 3;
    } else if (glob.startsWith('**', i)) {
      out += '.+';
      i += 2;
    } else {
      const c = glob[i]!;
      out += c === '*' ? '[^/]*' : c === '?' ? '[^/]' : c.replace(/[.\\^$+()[\]{}|-]/g, '\\$&');
      i += 1;
    }
  }
  return new RegExp(`^${out}$`);
}

// ---- tag patterns -------------------------------------------------------------------------------

const tagGrammar = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const tagGlobGrammar = /^[A-Za-z0-9_.*?-]{1,128}$/;

export interface TagPattern {
  readonly kind: 'exact' | 'glob' | 'semver';
  readonly text: string;
  matches(tag: string): boolean;
  /** The version a matching tag names (semver patterns only). */
  version(tag: string): SemVer | undefined;
}

/** A compiled tag pattern; HookError INVALID (field `tag`) when it is not one. */
export function compileTagPattern(pattern: string): TagPattern {
  if (pattern.startsWith('semver:')) {
    const rangeText = pattern.slice('semver:'.length).trim();
    if (rangeText === '')
      throw invalid('tag', 'a semver pattern needs a range after "semver:" (e.g. "semver:^1.2")');
    let range: ReturnType<typeof parseRange>;
    try {
      range = parseRange(rangeText);
    } catch (err) {
      if (err instanceof SemverError) throw invalid('tag', err.message);
      throw err;
    }
    return {
      kind: 'semver',
      text: pattern,
      matches: (tag) => {
        const v = parseVersion(tag);
        return v !== undefined && satisfies(v, range);
      },
      version: (tag) => parseVersion(tag),
    };
  }
  if (/[*?]/.test(pattern)) {
    if (!tagGlobGrammar.test(pattern)) {
      throw invalid(
        'tag',
        `"${pattern}" is not a valid tag glob: use letters, digits, '_', '.', '-' and the wildcards '*' and '?' (at most 128 characters)`,
      );
    }
    const re = new RegExp(
      `^${pattern
        .replace(/[.\\^$+()[\]{}|-]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.')}$`,
    );
    return { kind: 'glob', text: pattern, matches: (tag) => re.test(tag), version: () => undefined };
  }
  if (!tagGrammar.test(pattern)) {
    throw invalid(
      'tag',
      `"${pattern}" is neither a tag (letters, digits, '_', '.', '-', at most 128 characters, not starting with '.' or '-'), a glob with '*' or '?', nor "semver:<range>"`,
    );
  }
  return { kind: 'exact', text: pattern, matches: (tag) => tag === pattern, version: () => undefined };
}

// ---- which pushes can trigger anything ----------------------------------------------------------

const runnableManifestTypes = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);
/** The registry reports an image manifest's config media type as its artifactType; these are images. */
const imageConfigTypes = new Set([
  'application/vnd.oci.image.config.v1+json',
  'application/vnd.docker.container.image.v1+json',
]);

/**
 * Tags that tools write for artifacts about an image rather than for images: the OCI referrers
 * tag schema (`sha256-<hex>`) and cosign's `sha256-<hex>.sig|.att|.sbom` attachments.
 */
export function isArtifactTag(tag: string): boolean {
  return /^sha(?:256|512)-[0-9a-f]{32,128}(?:\.[a-z]+)?$/.test(tag);
}

/** Why a push can never trigger a rule, or undefined when it is a tagged, runnable image. */
export function ignoredBecause(event: ManifestPushed): string | undefined {
  if (event.subject !== undefined)
    return 'a referrer (signature, SBOM, attestation, ...) of another manifest';
  if (!runnableManifestTypes.has(event.mediaType)) return `media type ${event.mediaType} is not an image`;
  if (event.artifactType !== undefined && !imageConfigTypes.has(event.artifactType)) {
    return `artifact type ${event.artifactType} is not an image`;
  }
  if (event.tags.length === 0) return 'pushed by digest without a tag (no rule can name it)';
  if (event.tags.every(isArtifactTag)) return 'only artifact tags (sha256-<digest>...)';
  return undefined;
}

// ---- validation ---------------------------------------------------------------------------------

const ruleFieldNames = new Set(['name', 'repository', 'tag', 'newerOnly', 'enabled', 'roleArn', 'action']);
/** A role as task roles name one; the name is a berth identity name. */
const roleArnGrammar =
  /^arn:aws[a-z-]*:iam::\d{12}:role\/(?:[A-Za-z0-9+=,.@_-]+\/)*[a-z0-9][a-z0-9._@-]{0,63}$/;
const familyOrRevision = /^[A-Za-z0-9_-]{1,255}(?::[1-9][0-9]{0,8})?$/;
const taskDefinitionArn =
  /^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:task-definition\/[A-Za-z0-9_-]{1,255}(?::[1-9][0-9]{0,8})?$/;
const ecsName = /^[A-Za-z0-9_-]{1,255}$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function rejectUnknown(value: Record<string, unknown>, allowed: readonly string[], where: string) {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw invalid(where ? `${where}.${key}` : key, `unknown field; expected one of ${allowed.join(', ')}`);
    }
  }
}

function stringField(value: Record<string, unknown>, key: string, field: string): string | undefined {
  const v = value[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(field, `must be a string, not ${JSON.stringify(v)}`);
  return v;
}

function clusterOf(action: Record<string, unknown>): string {
  const cluster = stringField(action, 'cluster', 'action.cluster') ?? DEFAULT_CLUSTER;
  if (
    !ecsName.test(cluster) &&
    !/^arn:aws[a-z-]*:ecs:[a-z0-9-]+:\d{12}:cluster\/[A-Za-z0-9_-]{1,255}$/.test(cluster)
  ) {
    throw invalid('action.cluster', `"${cluster}" is not a cluster name (letters, digits, '_', '-') or ARN`);
  }
  return cluster;
}

function validateOverrides(v: unknown): TaskOverride {
  if (!isRecord(v)) throw invalid('action.overrides', 'must be an object like RunTask\'s "overrides"');
  rejectUnknown(v, ['containerOverrides', 'taskRoleArn', 'cpu', 'memory'], 'action.overrides');
  for (const key of ['taskRoleArn', 'cpu', 'memory']) stringField(v, key, `action.overrides.${key}`);
  const list = v.containerOverrides;
  if (list !== undefined) {
    if (!Array.isArray(list)) throw invalid('action.overrides.containerOverrides', 'must be an array');
    list.forEach((o, i) => {
      const at = `action.overrides.containerOverrides[${i}]`;
      if (!isRecord(o)) throw invalid(at, 'must be an object');
      rejectUnknown(o, ['name', 'command', 'environment', 'cpu', 'memory', 'memoryReservation'], at);
      if (typeof o.name !== 'string' || o.name === '') throw invalid(`${at}.name`, 'must name a container');
      if (
        o.command !== undefined &&
        !(Array.isArray(o.command) && o.command.every((c) => typeof c === 'string'))
      ) {
        throw invalid(`${at}.command`, 'must be an array of strings');
      }
      if (
        o.environment !== undefined &&
        !(
          Array.isArray(o.environment) &&
          o.environment.every((e) => isRecord(e) && typeof e.name === 'string' && typeof e.value === 'string')
        )
      ) {
        throw invalid(`${at}.environment`, 'must be an array of { "name": string, "value": string }');
      }
      for (const key of ['cpu', 'memory', 'memoryReservation']) {
        const n = o[key];
        if (n !== undefined && !(Number.isSafeInteger(n) && (n as number) >= 0)) {
          throw invalid(`${at}.${key}`, 'must be a non-negative integer');
        }
      }
    });
  }
  return v as TaskOverride;
}

function validateAction(v: unknown): HookAction {
  if (!isRecord(v)) throw invalid('action', 'must be an object with "type": "runTask" or "rollService"');
  if (v.type === 'runTask') {
    rejectUnknown(v, ['type', 'cluster', 'taskDefinition', 'count', 'overrides'], 'action');
    const cluster = clusterOf(v);
    const taskDefinition = stringField(v, 'taskDefinition', 'action.taskDefinition');
    if (taskDefinition === undefined) throw invalid('action.taskDefinition', 'is required for runTask');
    if (!familyOrRevision.test(taskDefinition) && !taskDefinitionArn.test(taskDefinition)) {
      throw invalid(
        'action.taskDefinition',
        `"${taskDefinition}" is not a family, family:revision or task-definition ARN`,
      );
    }
    const count = v.count ?? 1;
    if (!Number.isSafeInteger(count) || (count as number) < 1 || (count as number) > 10) {
      throw invalid('action.count', `must be an integer from 1 to 10, not ${JSON.stringify(count)}`);
    }
    const overrides = v.overrides === undefined ? undefined : validateOverrides(v.overrides);
    return {
      type: 'runTask',
      cluster,
      taskDefinition,
      count: count as number,
      ...(overrides && { overrides }),
    };
  }
  if (v.type === 'rollService') {
    rejectUnknown(v, ['type', 'cluster', 'service'], 'action');
    const cluster = clusterOf(v);
    const service = stringField(v, 'service', 'action.service');
    if (service === undefined) throw invalid('action.service', 'is required for rollService');
    if (!ecsName.test(service)) {
      throw invalid(
        'action.service',
        `"${service}" is not a service name (letters, digits, '_', '-', at most 255)`,
      );
    }
    return { type: 'rollService', cluster, service };
  }
  throw invalid('action.type', `must be "runTask" or "rollService", not ${JSON.stringify(v.type)}`);
}

/**
 * A complete, normalised rule from a client's JSON; with `base`, the JSON is a patch over that
 * rule (fields present replace the rule's, `action` whole). HookError INVALID names the first
 * field at fault. newerOnly defaults to true for semver patterns (the point of a version range is
 * to move forward) and must be false for the others, which name no order.
 */
export function validateRuleFields(input: unknown, base?: HookRuleFields): HookRuleFields {
  if (!isRecord(input)) throw new HookError('INVALID', 'a rule must be a JSON object');
  for (const key of Object.keys(input)) {
    if (!ruleFieldNames.has(key)) {
      throw invalid(key, `unknown field; a rule has ${[...ruleFieldNames].join(', ')}`);
    }
  }
  const merged: Record<string, unknown> = { ...base, ...input };
  const name = merged.name;
  if (typeof name !== 'string' || name.trim() === '')
    throw invalid('name', 'is required (a non-empty string)');
  if (name.length > 128) throw invalid('name', 'must be at most 128 characters');

  const repository = merged.repository;
  if (typeof repository !== 'string')
    throw invalid('repository', 'is required (a repository glob, e.g. "team/*")');
  const problem = repositoryGlobProblem(repository);
  if (problem) throw invalid('repository', problem);

  const tag = merged.tag;
  if (typeof tag !== 'string')
    throw invalid('tag', 'is required (a tag, a glob like "release-*" or "semver:^1.2")');
  const pattern = compileTagPattern(tag);

  // A patch that changes the pattern re-derives newerOnly's default unless it sets newerOnly too.
  const newerOnlyGiven =
    'newerOnly' in input ? input.newerOnly : 'tag' in input ? undefined : base?.newerOnly;
  const newerOnly = newerOnlyGiven ?? pattern.kind === 'semver';
  if (typeof newerOnly !== 'boolean') throw invalid('newerOnly', 'must be true or false');
  if (newerOnly && pattern.kind !== 'semver') {
    throw invalid(
      'newerOnly',
      `needs a "semver:" tag pattern (it compares versions); "${tag}" names no order`,
    );
  }
  const enabled = merged.enabled ?? true;
  if (typeof enabled !== 'boolean') throw invalid('enabled', 'must be true or false');
  const roleArn = merged.roleArn;
  if (roleArn === undefined) {
    // A rule from before rules had roles may still be edited while disabled (to be deleted or
    // given a role later); a new rule, or one that is to act, needs one.
    if (!base || enabled)
      throw invalid(
        'roleArn',
        'is required: the role the rule acts as (arn:aws:iam::ACCOUNT:role/NAME), which needs the rights its action uses',
      );
  } else if (typeof roleArn !== 'string' || !roleArnGrammar.test(roleArn)) {
    throw invalid(
      'roleArn',
      `${JSON.stringify(roleArn)} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME, NAME a berth role)`,
    );
  }
  if (merged.action === undefined) throw invalid('action', 'is required');
  const action = validateAction(merged.action);
  return {
    name: name.trim(),
    repository,
    tag,
    newerOnly,
    enabled,
    ...(roleArn !== undefined && { roleArn }),
    action,
  };
}

// ---- matching -----------------------------------------------------------------------------------

export interface CompiledRule {
  readonly rule: HookRule;
  readonly repository: RegExp;
  readonly tag: TagPattern;
}

export function compileRule(rule: HookRule): CompiledRule {
  return { rule, repository: compileRepositoryGlob(rule.repository), tag: compileTagPattern(rule.tag) };
}

/** One push a rule acts on: a digest and the matching tags that point at it. */
export interface TagTarget {
  readonly digest: string;
  /** The tag the run is named after: for semver rules the highest version, else the latest pushed. */
  readonly tag: string;
  readonly tags: readonly string[];
  /** Position of the latest push among those considered (for ordering runs). */
  readonly order: number;
}

/**
 * What a rule acts on in a repository, given where each tag points after a debounce window
 * (`tags`: tag -> the digest and the order of its latest push). Several tags on one digest are one
 * target, so pushing `1.4.0` and `latest` for the same image triggers a rule matching both once.
 */
export function targetsOf(
  compiled: CompiledRule,
  repository: string,
  tags: ReadonlyMap<string, { digest: string; order: number }>,
): TagTarget[] {
  if (!compiled.rule.enabled || !compiled.repository.test(repository)) return [];
  const byDigest = new Map<string, { tag: string; order: number }[]>();
  for (const [tag, { digest, order }] of tags) {
    if (isArtifactTag(tag) || !compiled.tag.matches(tag)) continue;
    const list = byDigest.get(digest) ?? [];
    list.push({ tag, order });
    byDigest.set(digest, list);
  }
  const targets: TagTarget[] = [];
  for (const [digest, list] of byDigest) {
    const pick = [...list].sort((a, b) => {
      const va = compiled.tag.version(a.tag);
      const vb = compiled.tag.version(b.tag);
      if (va && vb) {
        const c = compareVersions(vb, va);
        if (c !== 0) return c;
      }
      return b.order - a.order || (a.tag < b.tag ? -1 : 1);
    })[0]!;
    targets.push({
      digest,
      tag: pick.tag,
      tags: list.map((t) => t.tag).sort(),
      order: Math.max(...list.map((t) => t.order)),
    });
  }
  return targets.sort((a, b) => a.order - b.order);
}
