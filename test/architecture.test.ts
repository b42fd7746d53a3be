// Enforces the import table of ../shared/ARCHITECTURE.md: which module may import which, and
// which single module owns each third-party package. A violation fails the suite with the
// file, the import and the rule it breaks.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const src = join(root, 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [p] : [];
  });
}

/** Every module specifier a file imports or re-exports (static and dynamic). */
function importsOf(code: string): string[] {
  const out: string[] = [];
  const re =
    /(?:^|\n)\s*(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g;
  for (const m of code.matchAll(re)) out.push((m[1] ?? m[2] ?? m[3])!);
  return out;
}

/** The module a src-relative path belongs to: 'storage', 'registry', ..., or the top-level file name. */
function moduleOf(rel: string): string {
  const parts = rel.split('/');
  return parts.length > 1 ? parts[0]! : parts[0]!.replace(/\.ts$/, '');
}

const leaves = ['config', 'errors', 'log', 'events', 'tls', 'outbound'];
// What each module may import from other modules (its own files are always fine).
const allowed: Record<string, (target: string) => boolean> = {
  config: (t) => t === 'errors.ts',
  errors: () => false,
  log: () => false,
  events: () => false,
  tls: (t) => t === 'errors.ts',
  // Requests to URLs someone else chose (OIDC issuers, webhooks), bounded in one place.
  outbound: (t) => t === 'errors.ts',
  storage: (t) => t === 'errors.ts' || t === 'log.ts',
  registry: (t) => ['storage/index.ts', 'errors.ts', 'log.ts', 'events.ts'].includes(t),
  auth: (t) => ['storage/index.ts', 'errors.ts', 'log.ts', 'outbound.ts'].includes(t),
  runner: (t) => ['storage/index.ts', 'errors.ts', 'log.ts', 'events.ts', 'outbound.ts'].includes(t),
  http: (t) => ['registry/index.ts', 'auth/index.ts', 'runner/index.ts', 'errors.ts', 'log.ts'].includes(t),
  main: () => true,
  cli: () => true,
  // The CLI's HTTPS client for the admin API: a client of the server, not a part of it.
  'admin-client': (t) => t === 'errors.ts',
};

// Third-party packages (and Node built-ins with side effects on the host) with a single owner.
const owners: [RegExp, (rel: string) => boolean, string][] = [
  [/^(hono|@hono\/)/, (r) => r.startsWith('http/'), 'http/'],
  [/^@aws-sdk\//, (r) => r === 'storage/s3.ts', 'storage/s3.ts'],
  [/^jose$/, (r) => r === 'auth/tokens.ts', 'auth/tokens.ts'],
  [/^node-forge$/, (r) => r === 'tls.ts', 'tls.ts'],
  [/^pino$/, (r) => r === 'log.ts', 'log.ts'],
  // runner/host.ts: mknod and xattrs through execFile (argument arrays, never a shell) for layers.
  [
    /^(node:)?child_process$/,
    (r) => /^runner\/(runtime|host|network)\.ts$/.test(r),
    'runner/runtime.ts, host.ts, network.ts',
  ],
];

describe('architecture', () => {
  const files = sourceFiles(src);

  it('finds the source tree', () => {
    expect(files.length).toBeGreaterThan(10);
  });

  it('parses the import forms we use', () => {
    const code = `import a from 'x';\nimport type { B } from "./y.ts";\nexport { c } from './z.ts';\nimport 'side';\nconst m = await import('./dyn.ts');\nimport {\n  d,\n  e,\n} from '../multi.ts';`;
    expect(importsOf(code)).toEqual(
      ['x', './y.ts', './z.ts', 'side', '../multi.ts', './dyn.ts'].sort(
        (a, b) => code.indexOf(a) - code.indexOf(b),
      ),
    );
  });

  it('keeps imports pointing the way ARCHITECTURE.md draws them', () => {
    const violations: string[] = [];
    for (const file of files) {
      const rel = relative(src, file);
      const from = moduleOf(rel);
      const rule = allowed[from];
      if (!rule) {
        violations.push(`${rel}: module '${from}' has no rule in test/architecture.test.ts`);
        continue;
      }
      for (const spec of importsOf(readFileSync(file, 'utf8'))) {
        if (spec.startsWith('.')) {
          const target = relative(src, resolve(dirname(file), spec));
          if (target.startsWith('..')) {
            if (!(from === 'cli' && target === '../package.json'))
              violations.push(`${rel}: imports ${spec} outside src/`);
            continue;
          }
          if (moduleOf(target) === from && !leaves.includes(from)) continue;
          if (!rule(target)) violations.push(`${rel}: '${from}' may not import ${target}`);
          continue;
        }
        for (const [pkg, ok, owner] of owners) {
          if (pkg.test(spec) && !ok(rel))
            violations.push(`${rel}: imports ${spec}, which only ${owner} may import`);
        }
      }
    }
    expect(violations).toEqual([]);
  });
});
