// The real aws CLI (Debian's awscli, v1) against berth's ECS endpoint: a clean environment (no
// profile, no instance metadata, no pager), berth's CA trusted, signed with one access key.
import { execFile, spawnSync } from 'node:child_process';

export interface AwsCliTarget {
  /** e.g. https://127.0.0.1:PORT/ecs */
  readonly endpoint: string;
  readonly caPath: string;
  readonly key: { readonly id: string; readonly secret: string };
  /** A directory of the suite's own for the CLI's HOME (it writes a cache there). */
  readonly home: string;
  readonly region?: string;
  /** More variables, e.g. AWS_MAX_ATTEMPTS: '1' so a refusal is not retried away. */
  readonly env?: Readonly<Record<string, string>>;
}

/** Synchronous on purpose: a suite decides with it whether its cases are declared. */
export function awsCliPresent(): boolean {
  return spawnSync('aws', ['--version']).status === 0;
}

export function awsCli(
  target: AwsCliTarget,
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      'aws',
      [
        ...args,
        '--endpoint-url',
        target.endpoint,
        '--region',
        target.region ?? 'us-east-1',
        '--output',
        'json',
      ],
      {
        env: {
          PATH: process.env['PATH'] ?? '/usr/bin:/bin',
          HOME: target.home,
          AWS_ACCESS_KEY_ID: target.key.id,
          AWS_SECRET_ACCESS_KEY: target.key.secret,
          AWS_CA_BUNDLE: target.caPath,
          AWS_EC2_METADATA_DISABLED: 'true',
          AWS_PAGER: '',
          ...target.env,
        },
        timeout: 120_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}
