// Push-triggered hooks: the registry hands every committed manifest push to record(), which makes
// it durable before the client hears 201; rules (hook-rules.ts) then run a task or roll a service
// onto the pushed digest, once per push or tag move, never twice for one event.
//
// Storage under `prefix` (small JSON documents; an outbox, then history):
//   rules/<ruleId>.json          a HookRule
//   state/<ruleId>.json          per repository: the digest the rule last acted on, and the highest
//                                version it ran for (newerOnly)
//   journal/<entryId>.json       a recorded push not yet dispatched (written by record())
//   dispatches/<entryId>.json    the pushes of one debounce window turned into runs, written in one
//                                put, kept until every run it created has ended
//   runs/<runId>.json            a HookRun: pending -> running -> succeeded | failed | skipped
//
// Why it cannot lose or repeat a push:
//   - record() returns only after the journal entry is stored; the registry awaits it before
//     answering, so a push the client saw succeed is on disk.
//   - A debounce window (per repository, debounceMs after its last push, at most maxDebounceMs
//     after its first) collects the pushes of a multi-arch image, or of several tags for one image,
//     into one dispatch: each enabled rule gets one run per distinct digest its tags point at, on the
//     digest they point at last. The dispatch document lists the journal entries it consumed and the
//     runs it created, so a crash between writing it and deleting those entries (or before writing
//     every run) is repaired on start without creating a run twice.
//   - Runs of one rule execute one at a time in order, so "same digest again" and "newer only"
//     compare against what the rule really did before. The decision is made when a run reaches the
//     head of its rule's queue (pending), and is written (running, with the action it will take)
//     before the action starts. A run found running after a restart is resumed by calling the
//     action again with the same idempotency key (the run id, passed as RunTask's clientToken and
//     the like), which answers what the first call did instead of acting again.
// Pushing a digest the rule last acted on in the repository again (to the same or another tag) is
// not a new deployment and is recorded as skipped; moving a tag back to an older digest is one
// (that is how a rollback by re-tagging works).
//
// A rule acts as its role (hook-rules.ts): writing an enabled rule needs the writer's right to pass
// that role and the role's rights to do what the rule does (HookActions.authorizeRule), and each
// run is authorized again as the role when it starts; a refusal, or a rule with no role, ends the
// run as `denied` with the reason, having started nothing.

import { randomBytes } from 'node:crypto';
import type { RegistryEvent } from '../events.ts';
import type { Logger } from '../log.ts';
import { PathNotFoundError, type StorageDriver } from '../storage/index.ts';
import {
  type CompiledRule,
  compileRule,
  type HookAction,
  HookDenied,
  HookError,
  type HookRule,
  type HookRuleFields,
  ignoredBecause,
  isArtifactTag,
  type RollServiceAction,
  type RunTaskAction,
  targetsOf,
  validateRuleFields,
} from './hook-rules.ts';
import type { Actor } from './launch-rights.ts';
import { recordNames, sortableIds } from './records.ts';
import { compareVersions, parseVersion } from './semver.ts';

export interface HookActions {
  /**
   * Whether `author` may write the rule (enabled rules only): throws HookError FORBIDDEN naming
   * the field whose right is missing (the author's iam:PassRole on roleArn, or the role's rights
   * for the action and the repositories).
   */
  authorizeRule(rule: HookRuleFields & { roleArn: string }, author: Actor): Promise<void>;
  /**
   * Runs `action.count` tasks with the pushed image as `roleArn`; `key` is the idempotency key
   * (clientToken). Throws HookDenied when the role may not, before anything starts.
   */
  runTask(
    action: RunTaskAction,
    imageRef: string,
    key: string,
    roleArn: string,
  ): Promise<{ taskArns: string[] }>;
  /**
   * Registers a revision pinned to imageRef and updates the service to it as `roleArn`;
   * idempotent per `key`. Throws HookDenied when the role may not, before anything changes.
   */
  rollService(
    action: RollServiceAction,
    imageRef: string,
    key: string,
    roleArn: string,
  ): Promise<{ deploymentId: string; taskDefinitionArn: string }>;
}

export type HookRunStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped' | 'denied';

export interface HookRun {
  readonly id: string;
  readonly ruleId: string;
  readonly ruleName: string;
  readonly repository: string;
  readonly digest: string;
  /** The tag the run is for (the highest version among `tags` for semver rules). */
  readonly tag: string;
  /** Every tag matching the rule that pointed at the digest when the window closed. */
  readonly tags: readonly string[];
  /** `repository@digest`: what the action pins. */
  readonly imageRef: string;
  readonly event: {
    readonly mediaType: string;
    readonly pushedAt: string;
    readonly entryIds: readonly string[];
  };
  readonly status: HookRunStatus;
  readonly reason?: string;
  /** The action as it was when the run started (later rule edits do not change a started run). */
  readonly action?: HookAction;
  /** The role the run acts as, as the rule named it when the run started. */
  readonly roleArn?: string;
  readonly result?: { taskArns: string[] } | { deploymentId: string; taskDefinitionArn: string };
  /** The idempotency key passed to the action. */
  readonly key: string;
  /** How many times the action was called (more than 1 only when resumed after a crash). */
  readonly attempts: number;
  readonly createdAt: string;
  readonly startedAt?: string;
  readonly finishedAt?: string;
}

export interface HooksOptions {
  readonly storage: StorageDriver;
  /** Storage path under which hooks keep everything, e.g. '/runner/hooks'. */
  readonly prefix: string;
  readonly log: Logger;
  readonly actions: HookActions;
  /** Quiet time after a repository's last push before its rules run. Default 2000 ms. */
  readonly debounceMs?: number;
  /** A window closes at the latest this long after its first push (a busy repository still deploys). */
  readonly maxDebounceMs?: number;
  /** Milliseconds since the epoch; for timestamps and ids. */
  readonly clock?: () => number;
}

export interface HookRuleStore {
  /** `author` is who writes the rule: its rights, and its role's, are checked (HookActions.authorizeRule). */
  create(input: unknown, author: Actor): Promise<HookRule>;
  list(): Promise<HookRule[]>;
  get(id: string): Promise<HookRule>;
  update(id: string, patch: unknown, author: Actor): Promise<HookRule>;
  delete(id: string): Promise<void>;
}

export interface HookRunList {
  list(opts?: { ruleId?: string; limit?: number; nextToken?: string }): Promise<{
    runs: HookRun[];
    nextToken?: string;
  }>;
  get(id: string): Promise<HookRun>;
}

export interface Hooks {
  /** Makes a registry event durable (resolves once stored); throws if it could not be stored. */
  record(event: RegistryEvent): Promise<void>;
  /** Loads rules, repairs and resumes what a previous process left, and starts dispatching. */
  start(): Promise<void>;
  /** Stops timers and dispatching; what is recorded stays for the next start(). */
  stop(): void;
  readonly rules: HookRuleStore;
  readonly runs: HookRunList;
  /** Resolves once no window is open and no run is queued or executing (for tests). */
  idle(): Promise<void>;
}

interface JournalEntry {
  readonly id: string;
  readonly repository: string;
  readonly digest: string;
  readonly mediaType: string;
  readonly tags: readonly string[];
  readonly pushedAt: string;
  readonly recordedAt: string;
}

interface Dispatch {
  readonly id: string;
  readonly repository: string;
  readonly entryIds: readonly string[];
  /** The runs as created (pending): enough to write any that a crash kept from being stored. */
  readonly runs: readonly HookRun[];
}

interface RepositoryState {
  readonly digest: string;
  readonly runId: string;
  readonly highest?: { readonly version: string; readonly tag: string; readonly runId: string };
}

interface RuleState {
  readonly repositories: Record<string, RepositoryState>;
}

interface Window {
  readonly entries: JournalEntry[];
  readonly openedAt: number;
  timer: NodeJS.Timeout;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ruleIdPattern = /^hr-[0-9a-f]{12}$/;
const runIdPattern = /^\d{17}[0-9a-f]{6}-\d{3,6}\.hr-[0-9a-f]{12}$/;
const terminal = new Set<HookRunStatus>(['succeeded', 'failed', 'skipped', 'denied']);

/** What a run of a rule without a role records: the rule is from before rules had roles. */
function noRoleReason(rule: HookRule): string {
  return (
    `rule ${rule.id} has no roleArn (it was stored before hook rules acted as a role), so it acts ` +
    `with no rights: give it one with PUT /api/v1/hooks/${rule.id} {"rule": {"roleArn": ` +
    `"arn:aws:iam::ACCOUNT:role/NAME"}}, naming a role allowed the rule's action and registry:Pull on its repositories`
  );
}

export function createHooks(opts: HooksOptions): Hooks {
  const { storage, log, actions } = opts;
  const prefix = opts.prefix.replace(/\/+$/, '');
  const debounceMs = opts.debounceMs ?? 2000;
  const maxDebounceMs = Math.max(debounceMs, opts.maxDebounceMs ?? 30_000);
  const now = opts.clock ?? Date.now;
  const iso = () => new Date(now()).toISOString();

  const paths = {
    rule: (id: string) => `${prefix}/rules/${id}.json`,
    state: (ruleId: string) => `${prefix}/state/${ruleId}.json`,
    entry: (id: string) => `${prefix}/journal/${id}.json`,
    dispatch: (id: string) => `${prefix}/dispatches/${id}.json`,
    run: (id: string) => `${prefix}/runs/${id}.json`,
    dir: (name: 'rules' | 'journal' | 'dispatches' | 'runs') => `${prefix}/${name}`,
  };

  async function read<T>(path: string): Promise<T | undefined> {
    try {
      return JSON.parse(decoder.decode(await storage.getContent(path))) as T;
    } catch (err) {
      if (err instanceof PathNotFoundError) return undefined;
      throw err;
    }
  }
  const write = (path: string, value: unknown) =>
    storage.putContent(path, encoder.encode(JSON.stringify(value)));
  async function remove(path: string) {
    try {
      await storage.delete(path);
    } catch (err) {
      if (!(err instanceof PathNotFoundError)) throw err;
    }
  }
  /** File names (without .json) in a directory, sorted; none when it was never written. */
  const names = async (dir: 'rules' | 'journal' | 'dispatches' | 'runs') =>
    (await recordNames(storage, paths.dir(dir))).sort();
  const newEntryId = sortableIds(now);

  // ---- rules ------------------------------------------------------------------------------------

  let rules: Map<string, CompiledRule> | undefined;
  let loadingRules: Promise<Map<string, CompiledRule>> | undefined;
  function loadRules(): Promise<Map<string, CompiledRule>> {
    if (rules) return Promise.resolve(rules);
    loadingRules ??= (async () => {
      const loaded = new Map<string, CompiledRule>();
      for (const id of await names('rules')) {
        const rule = await read<HookRule>(paths.rule(id));
        if (!rule) continue;
        try {
          loaded.set(rule.id, compileRule(rule));
        } catch (err) {
          log.error({ err, ruleId: rule.id }, 'hook rule no longer compiles; ignoring it');
        }
      }
      rules = loaded;
      return loaded;
    })();
    return loadingRules;
  }

  async function ruleOrThrow(id: string): Promise<CompiledRule> {
    const r = ruleIdPattern.test(id) ? (await loadRules()).get(id) : undefined;
    if (!r) throw new HookError('NOT_FOUND', `hook rule ${id} does not exist`);
    return r;
  }

  /** A rule that is to act needs its rights; a disabled one acts on nothing until it is enabled. */
  async function authorizeRule(fields: HookRuleFields, author: Actor) {
    if (fields.enabled && fields.roleArn !== undefined)
      await actions.authorizeRule({ ...fields, roleArn: fields.roleArn }, author);
  }

  const ruleStore: HookRuleStore = {
    async create(input, author) {
      const fields = validateRuleFields(input);
      await authorizeRule(fields, author);
      const at = iso();
      const rule: HookRule = {
        id: `hr-${randomBytes(6).toString('hex')}`,
        ...fields,
        createdAt: at,
        updatedAt: at,
      };
      const loaded = await loadRules();
      await write(paths.rule(rule.id), rule);
      loaded.set(rule.id, compileRule(rule));
      return rule;
    },
    async list() {
      const loaded = await loadRules();
      return [...loaded.values()]
        .map((c) => c.rule)
        .sort((a, b) =>
          a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : 1,
        );
    },
    async get(id) {
      return (await ruleOrThrow(id)).rule;
    },
    async update(id, patch, author) {
      const { rule: current } = await ruleOrThrow(id);
      const { id: _id, createdAt, updatedAt: _u, ...fields } = current;
      const changed = validateRuleFields(patch, fields);
      await authorizeRule(changed, author);
      const next: HookRule = { id, ...changed, createdAt, updatedAt: iso() };
      await write(paths.rule(id), next);
      // A new tag pattern is a new version line: what "newer" meant under the old one no longer holds.
      if (next.tag !== current.tag) await remove(paths.state(id));
      (await loadRules()).set(id, compileRule(next));
      return next;
    },
    async delete(id) {
      await ruleOrThrow(id);
      await remove(paths.rule(id));
      await remove(paths.state(id));
      (await loadRules()).delete(id);
    },
  };

  // ---- runs: listing ----------------------------------------------------------------------------

  const runList: HookRunList = {
    async list(q = {}) {
      const limit = q.limit ?? 50;
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > 1000) {
        throw new HookError('INVALID', 'limit: must be an integer from 1 to 1000', 'limit');
      }
      if (q.nextToken !== undefined && !runIdPattern.test(q.nextToken)) {
        throw new HookError('INVALID', 'nextToken: not a token this list returned', 'nextToken');
      }
      if (q.ruleId !== undefined && !ruleIdPattern.test(q.ruleId)) {
        throw new HookError('INVALID', `ruleId: "${q.ruleId}" is not a hook rule id`, 'ruleId');
      }
      let ids = (await names('runs')).filter((id) => runIdPattern.test(id)).reverse();
      if (q.ruleId !== undefined) ids = ids.filter((id) => id.endsWith(`.${q.ruleId}`));
      if (q.nextToken !== undefined) {
        const token = q.nextToken;
        ids = ids.filter((id) => id < token);
      }
      const page = ids.slice(0, limit);
      const runs = (await Promise.all(page.map((id) => read<HookRun>(paths.run(id))))).filter(
        (r): r is HookRun => r !== undefined,
      );
      return ids.length > limit ? { runs, nextToken: page[page.length - 1]! } : { runs };
    },
    async get(id) {
      const run = runIdPattern.test(id) ? await read<HookRun>(paths.run(id)) : undefined;
      if (!run) throw new HookError('NOT_FOUND', `hook run ${id} does not exist`);
      return run;
    },
  };

  // ---- dispatching ------------------------------------------------------------------------------

  let started = false;
  let stopped = false;
  const windows = new Map<string, Window>();
  /** Every piece of asynchronous work in flight, for idle() and error logging. */
  const inflight = new Set<Promise<unknown>>();
  /** Per rule, the tail of its queue of runs. */
  const queues = new Map<string, Promise<void>>();
  /** Per dispatch, how many of its runs have not ended yet. */
  const openRuns = new Map<string, number>();

  function track(work: Promise<unknown>, what: string) {
    const p = work.catch((err) => log.error({ err }, `push hooks: ${what} failed`));
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  }

  function schedule(entry: JournalEntry) {
    const existing = windows.get(entry.repository);
    // record() racing start()'s journal listing can offer an entry twice.
    if (existing?.entries.some((e) => e.id === entry.id)) return;
    const w: Window = existing ?? {
      entries: [],
      openedAt: now(),
      timer: undefined as unknown as NodeJS.Timeout,
    };
    if (existing) clearTimeout(existing.timer);
    w.entries.push(entry);
    const delay = Math.max(0, Math.min(debounceMs, w.openedAt + maxDebounceMs - now()));
    w.timer = setTimeout(() => {
      windows.delete(entry.repository);
      track(
        dispatch(entry.repository, w.entries),
        `dispatching pushes to ${entry.repository} (they stay in the journal for the next start)`,
      );
    }, delay);
    windows.set(entry.repository, w);
  }

  async function dispatch(repository: string, entries: JournalEntry[]) {
    if (stopped) return;
    const sorted = [...entries].sort((a, b) => (a.id < b.id ? -1 : 1));
    const last = sorted[sorted.length - 1]!;
    // Where each tag points once the window closed, and which push put it there.
    const tags = new Map<string, { digest: string; order: number }>();
    sorted.forEach((e, order) => {
      for (const tag of e.tags) tags.set(tag, { digest: e.digest, order });
    });
    const planned = [...(await loadRules()).values()]
      .flatMap((compiled) => targetsOf(compiled, repository, tags).map((target) => ({ compiled, target })))
      .sort((a, b) => a.target.order - b.target.order);
    if (planned.length === 0) {
      log.debug({ repository, entries: sorted.length }, 'push hooks: no rule matches');
      for (const e of sorted) await remove(paths.entry(e.id));
      return;
    }
    const createdAt = iso();
    const runs = planned.map(({ compiled, target }, i): HookRun => {
      const entry = sorted[target.order]!;
      const id = `${last.id}-${String(i).padStart(3, '0')}.${compiled.rule.id}`;
      return {
        id,
        ruleId: compiled.rule.id,
        ruleName: compiled.rule.name,
        repository,
        digest: target.digest,
        tag: target.tag,
        tags: target.tags,
        imageRef: `${repository}@${target.digest}`,
        event: {
          mediaType: entry.mediaType,
          pushedAt: entry.pushedAt,
          // The pushes this run stands for: those that put one of its tags on its digest.
          entryIds: sorted
            .filter((e) => e.digest === target.digest && e.tags.some((t) => target.tags.includes(t)))
            .map((e) => e.id),
        },
        status: 'pending',
        key: id,
        attempts: 0,
        createdAt,
      };
    });
    const d: Dispatch = { id: last.id, repository, entryIds: sorted.map((e) => e.id), runs };
    await write(paths.dispatch(d.id), d);
    await settleDispatch(d);
  }

  /** Makes sure every run of a dispatch is stored and its journal entries are gone, then queues the open runs. */
  async function settleDispatch(d: Dispatch) {
    const open: HookRun[] = [];
    for (const initial of d.runs) {
      let run = await read<HookRun>(paths.run(initial.id));
      if (!run) {
        await write(paths.run(initial.id), initial);
        run = initial;
      }
      if (!terminal.has(run.status)) open.push(run);
    }
    for (const id of d.entryIds) await remove(paths.entry(id));
    if (open.length === 0) {
      await remove(paths.dispatch(d.id));
      return;
    }
    openRuns.set(d.id, open.length);
    for (const run of open) enqueue(run, d.id);
  }

  function enqueue(run: HookRun, dispatchId: string) {
    const tail = queues.get(run.ruleId) ?? Promise.resolve();
    const next = tail.then(async () => {
      try {
        // A run this process stopped before starting stays open: the dispatch must outlive it.
        if (!(await execute(run.id))) return;
      } catch (err) {
        log.error(
          { err, runId: run.id },
          'push hook run failed to record its outcome; it resumes on restart',
        );
        return;
      }
      const left = (openRuns.get(dispatchId) ?? 1) - 1;
      if (left > 0) openRuns.set(dispatchId, left);
      else {
        openRuns.delete(dispatchId);
        await remove(paths.dispatch(dispatchId));
      }
    });
    queues.set(run.ruleId, next);
    track(next, `run ${run.id}`);
    void next.finally(() => {
      if (queues.get(run.ruleId) === next) queues.delete(run.ruleId);
    });
  }

  async function finish(
    run: HookRun,
    status: 'succeeded' | 'failed' | 'skipped' | 'denied',
    extra: Partial<HookRun>,
  ) {
    const done: HookRun = { ...run, ...extra, status, finishedAt: iso() };
    await write(paths.run(run.id), done);
    const level = status === 'failed' || status === 'denied' ? 'warn' : 'info';
    log[level](
      {
        runId: run.id,
        ruleId: run.ruleId,
        imageRef: run.imageRef,
        tag: run.tag,
        status,
        reason: done.reason,
      },
      `push hook ${status}`,
    );
  }

  /** Whether this rule should act on the run's push; a reason when it should not. */
  async function skipReason(compiled: CompiledRule, run: HookRun): Promise<string | undefined> {
    const { rule } = compiled;
    if (!rule.enabled) return 'the rule was disabled before the run started';
    const state = (await read<RuleState>(paths.state(rule.id)))?.repositories[run.repository];
    if (state?.digest === run.digest) {
      return `${run.imageRef} is what this rule last acted on (run ${state.runId}); the same digest again is not a new deployment`;
    }
    if (rule.newerOnly && state?.highest) {
      const v = parseVersion(run.tag);
      const highest = parseVersion(state.highest.version);
      if (v && highest && compareVersions(v, highest) <= 0) {
        return `${run.tag} is not newer than ${state.highest.tag}, which this rule already ran for (run ${state.highest.runId})`;
      }
    }
    return undefined;
  }

  async function remember(run: HookRun) {
    const compiled = rules?.get(run.ruleId);
    if (!compiled) return; // deleted while the action ran: nothing to remember for
    const state = (await read<RuleState>(paths.state(run.ruleId))) ?? { repositories: {} };
    const previous = state.repositories[run.repository];
    const v = compiled.rule.newerOnly ? parseVersion(run.tag) : undefined;
    const before = previous?.highest ? parseVersion(previous.highest.version) : undefined;
    const highest =
      v && (!before || compareVersions(v, before) > 0)
        ? { version: v.text, tag: run.tag, runId: run.id }
        : previous?.highest;
    const next: RuleState = {
      repositories: {
        ...state.repositories,
        [run.repository]: { digest: run.digest, runId: run.id, ...(highest && { highest }) },
      },
    };
    await write(paths.state(run.ruleId), next);
  }

  /** Takes a run to its end; false when this process stopped before it could. */
  async function execute(runId: string): Promise<boolean> {
    let run = await read<HookRun>(paths.run(runId));
    if (!run || terminal.has(run.status)) return true;
    if (stopped) return false;
    if (run.status === 'pending') {
      const compiled = (await loadRules()).get(run.ruleId);
      if (!compiled) {
        await finish(run, 'skipped', { reason: 'the rule was deleted before the run started' });
        return true;
      }
      const reason = await skipReason(compiled, run);
      if (reason) {
        await finish(run, 'skipped', { reason });
        return true;
      }
      const { roleArn } = compiled.rule;
      if (roleArn === undefined) {
        await finish(run, 'denied', { action: compiled.rule.action, reason: noRoleReason(compiled.rule) });
        return true;
      }
      run = {
        ...run,
        status: 'running',
        action: compiled.rule.action,
        roleArn,
        attempts: 1,
        startedAt: iso(),
      };
    } else {
      // Left running by a process that stopped before it saw the action end: ask again with the
      // same key, which the action answers with what it did the first time.
      log.warn({ runId, key: run.key }, 'push hook resuming a run that was running at a restart');
      run = { ...run, attempts: run.attempts + 1 };
    }
    await write(paths.run(runId), run);
    const action = run.action!;
    const roleArn = run.roleArn;
    let result: HookRun['result'];
    try {
      // A run left running by a process from before rules had roles has none to act as.
      if (roleArn === undefined)
        throw new HookDenied('the run started before hook rules acted as a role; push again to deploy');
      result =
        action.type === 'runTask'
          ? await actions.runTask(action, run.imageRef, run.key, roleArn)
          : await actions.rollService(action, run.imageRef, run.key, roleArn);
    } catch (err) {
      await finish(run, err instanceof HookDenied ? 'denied' : 'failed', {
        reason: (err instanceof Error ? err.message : String(err)).slice(0, 2000),
      });
      return true;
    }
    // Remember before marking done: a crash in between resumes the run (idempotently) and remembers again.
    await remember(run);
    await finish(run, 'succeeded', { result });
    return true;
  }

  // ---- the facade -------------------------------------------------------------------------------

  return {
    async record(event) {
      if (event.type !== 'manifest.pushed') return;
      const why = ignoredBecause(event);
      if (why) {
        log.debug({ repository: event.repository, digest: event.digest, why }, 'push hooks: ignoring push');
        return;
      }
      const entry: JournalEntry = {
        id: newEntryId(),
        repository: event.repository,
        digest: event.digest,
        mediaType: event.mediaType,
        tags: event.tags.filter((t) => !isArtifactTag(t)),
        pushedAt: event.at,
        recordedAt: iso(),
      };
      await write(paths.entry(entry.id), entry);
      if (started && !stopped) schedule(entry);
    },

    async start() {
      if (started) return;
      started = true;
      stopped = false;
      await loadRules();
      const consumed = new Set<string>();
      for (const id of await names('dispatches')) {
        const d = await read<Dispatch>(paths.dispatch(id));
        if (!d) continue;
        for (const e of d.entryIds) consumed.add(e);
        await settleDispatch(d);
      }
      for (const id of await names('journal')) {
        if (consumed.has(id)) continue;
        const entry = await read<JournalEntry>(paths.entry(id));
        if (entry) schedule(entry);
      }
    },

    stop() {
      stopped = true;
      for (const w of windows.values()) clearTimeout(w.timer);
      windows.clear();
    },

    rules: ruleStore,
    runs: runList,

    async idle() {
      while (windows.size > 0 || inflight.size > 0) {
        if (inflight.size > 0) await Promise.race(inflight);
        else await new Promise((r) => setTimeout(r, Math.min(debounceMs, 20)));
      }
    },
  };
}
