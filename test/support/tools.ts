// Running the real client binaries the e2e suites drive.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command, throwing with its full output on a non-zero exit or a timeout. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { env?: Record<string, string>; timeoutMs?: number; cwd?: string; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      {
        env: { ...process.env, ...opts.env },
        timeout: opts.timeoutMs ?? 120_000,
        maxBuffer: 64 * 1024 * 1024,
        cwd: opts.cwd,
      },
      (err, stdout, stderr) => {
        if (err) {
          reject(
            new Error(
              `${cmd} ${args.join(' ')} failed (${err.message.split('\n')[0]})\n--- stdout\n${stdout}\n--- stderr\n${stderr}`,
            ),
          );
        } else resolve({ stdout, stderr });
      },
    );
    // Secrets go through stdin, never argv (where ps would show them). A command that exits
    // without reading its stdin makes this write fail with EPIPE: that is no error of ours.
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}

/**
 * The absolute path of a tool the suite needs. A missing tool fails the suite with the fix:
 * `npm test` installs every one of them through scripts/setup-system.sh first.
 */
export function tool(name: string): string {
  for (const dir of ['/usr/bin', '/usr/sbin', '/bin', '/sbin']) {
    const p = `${dir}/${name}`;
    if (existsSync(p)) return p;
  }
  throw new Error(`${name} is not installed: run scripts/setup-system.sh (npm test runs it first)`);
}
