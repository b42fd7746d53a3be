// The benchmark's report: a markdown table per group of cases (berth, Distribution, ratio,
// target, verdict; or whatever two sides a group compares, or one side measured alone), headed by
// the exact command and the machine it ran on.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { release, totalmem } from 'node:os';

export interface Row {
  readonly group: string;
  readonly case: string;
  readonly unit: 'MiB/s' | 'req/s' | 'tokens/s';
  /**
   * What the columns compare: berth beside Distribution unless said otherwise (the auth case
   * compares berth with auth on to berth with auth off); one name for a row measured alone.
   */
  readonly sides?: readonly [string] | readonly [string, string];
  /** The first side's value (berth), and the second's (Distribution, or whatever `sides` names). */
  readonly left?: number;
  readonly right?: number;
  /** Minimum left/right ratio the issue asks for; none for rows recorded for information. */
  readonly target?: number;
  /** The target also needs the left side's p99 <= the right side's. */
  readonly p99NoWorse?: boolean;
  /** Latency cases: p50/p99 in ms. */
  readonly latency?: {
    readonly left?: { p50: number; p99: number };
    readonly right?: { p50: number; p99: number };
  };
}

export const defaultSides = ['berth', 'Distribution'] as const;

export interface Machine {
  readonly date: string;
  readonly nproc: string;
  readonly cpu: string;
  readonly memory: string;
  readonly kernel: string;
  readonly node: string;
  readonly distribution: string;
  /** The berth source measured: commit, and whether the tree had uncommitted changes. */
  readonly source: string;
}

const sh = (cmd: string, args: string[]) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
};

/** The berth source as it is now: read when the servers start, as others may commit meanwhile. */
export function sourceVersion(): string {
  return `commit ${sh('git', ['rev-parse', '--short', 'HEAD'])}${sh('git', ['status', '--porcelain', '--', 'src']) ? ' with uncommitted changes in src/' : ''}`;
}

export function machine(distributionVersion: string, source: string = sourceVersion()): Machine {
  let cpu = 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch {}
  return {
    date: new Date().toISOString(),
    nproc: sh('nproc', []),
    cpu,
    memory: `${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    kernel: `Linux ${release()}`,
    node: process.version,
    distribution: distributionVersion,
    source,
  };
}

/** True, false, or undefined when one side was not measured or the row has no target. */
export function verdict(r: Row): boolean | undefined {
  if (r.left === undefined || r.right === undefined || r.target === undefined) return undefined;
  const ratioOk = r.left / r.right >= r.target;
  const a = r.latency?.left;
  const b = r.latency?.right;
  return ratioOk && (!r.p99NoWorse || !a || !b || a.p99 <= b.p99);
}

const fmt = (v: number | undefined, unit: string) => (v === undefined ? '—' : `${v.toFixed(0)} ${unit}`);
const ms = (l: { p50: number; p99: number } | undefined) =>
  l ? `${l.p50.toFixed(1)} / ${l.p99.toFixed(1)}` : '—';

/** One group's table; every row of a group has the same `sides`. */
function table(rows: readonly Row[]): string[] {
  const sides = rows[0]?.sides ?? defaultSides;
  const latency = rows.some((r) => r.latency);
  const targets = rows.some((r) => r.target !== undefined);
  const columns: [string, string][] = [['case', '---'], ...sides.map((x): [string, string] => [x, '---:'])];
  if (sides.length === 2) columns.push(['ratio', '---:']);
  if (latency) columns.push(...sides.map((x): [string, string] => [`p50 / p99 ms ${x}`, '---:']));
  if (targets) columns.push(['target', '---'], ['result', '---']);
  const head = columns.map((c) => c[0]);
  const align = columns.map((c) => c[1]);
  return [
    `| ${head.join(' | ')} |`,
    `| ${align.join(' | ')} |`,
    ...rows.map((r) => {
      const cells = [r.case, fmt(r.left, r.unit)];
      if (sides.length === 2) {
        cells.push(fmt(r.right, r.unit));
        cells.push(r.left !== undefined && r.right !== undefined ? `${(r.left / r.right).toFixed(2)}x` : '—');
      }
      if (latency) {
        cells.push(ms(r.latency?.left));
        if (sides.length === 2) cells.push(ms(r.latency?.right));
      }
      if (targets) {
        const v = verdict(r);
        cells.push(
          r.target === undefined ? '—' : `≥ ${r.target.toFixed(2)}x${r.p99NoWorse ? ', p99 no worse' : ''}`,
          v === undefined ? '—' : v ? 'pass' : '**miss**',
        );
      }
      return `| ${cells.join(' | ')} |`;
    }),
  ];
}

export function markdown(
  rows: readonly Row[],
  m: Machine,
  command: string,
  notes: readonly string[],
  /** Paragraphs under a group's heading, before its table. */
  groupNotes: Readonly<Record<string, readonly string[]>> = {},
): string {
  const verdicts = rows.map(verdict).filter((v) => v !== undefined);
  const missed = verdicts.filter((v) => !v).length;
  const lines = [
    '# Benchmark results',
    '',
    'Generated by bench/run.ts; overwritten by every full run. Raw numbers of each run go to bench/out/.',
    '',
    "Runner (push committed → container's first output, issue 5 item 8): bench/RUNNER-RESULTS.md, written by `npm run bench:runner` (bench/runner.ts). Storage (S3 and encryption, issue 3): bench/STORAGE-RESULTS.md, `npm run bench:storage`.",
    '',
    `- Command: \`${command}\``,
    `- Date: ${m.date}`,
    `- Machine: ${m.nproc} cores (nproc), ${m.cpu}, ${m.memory} RAM, ${m.kernel}`,
    `- Client and servers: Node ${m.node}; ${m.distribution}; berth ${m.source}`,
    ...notes.map((n) => `- ${n}`),
    '',
    verdicts.length
      ? `**${verdicts.length - missed} of ${verdicts.length} targets met${missed ? `, ${missed} missed` : ''}.**`
      : 'No case with a target was measured.',
    '',
  ];
  const groups = [...new Set(rows.map((r) => r.group))];
  for (const g of groups) {
    lines.push(`## ${g}`, '');
    for (const p of groupNotes[g] ?? []) lines.push(p, '');
    lines.push(...table(rows.filter((r) => r.group === g)), '');
  }
  return lines.join('\n');
}
