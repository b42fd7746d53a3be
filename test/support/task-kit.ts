// One-container tasks running a busybox shell script, driven through @aws-sdk/client-ecs, with
// their logs read back through berth's runner API: what the runner suites that probe a
// container from inside share.
import {
  type ContainerDefinition,
  DescribeTasksCommand,
  type ECSClient,
  RegisterTaskDefinitionCommand,
  type RegisterTaskDefinitionCommandInput,
  RunTaskCommand,
  StopTaskCommand,
  type Task,
} from '@aws-sdk/client-ecs';
import type { httpsClient } from './https.ts';

export const taskIdOf = (arn: string) => arn.slice(arn.lastIndexOf('/') + 1);

export function taskKit(o: {
  ecs: () => ECSClient;
  api: () => ReturnType<typeof httpsClient>;
  image: string;
  /** Family names are `${prefix}-N`. */
  prefix: string;
  until: <T>(what: string, probe: () => Promise<T | undefined>) => Promise<T>;
  cluster?: string;
}) {
  const cluster = o.cluster ?? 'default';
  let family = 0;

  /** Registers a task definition whose container `main` runs `script` in busybox sh; answers its ARN. */
  async function define(
    script: string,
    container: Partial<ContainerDefinition> = {},
    task: Partial<RegisterTaskDefinitionCommandInput> = {},
  ): Promise<string> {
    const out = await o.ecs().send(
      new RegisterTaskDefinitionCommand({
        family: `${o.prefix}-${++family}`,
        networkMode: 'none',
        containerDefinitions: [
          {
            name: 'main',
            image: o.image,
            memory: 64,
            command: ['/bin/busybox', 'sh', '-c', script],
            ...container,
          },
        ],
        ...task,
      }),
    );
    return out.taskDefinition!.taskDefinitionArn!;
  }

  /** Runs one task of the definition; answers its ARN. */
  async function runTask(taskDefinition: string): Promise<string> {
    const out = await o.ecs().send(new RunTaskCommand({ cluster, taskDefinition }));
    if (out.failures?.length) throw new Error(`RunTask failed: ${JSON.stringify(out.failures)}`);
    return out.tasks![0]!.taskArn!;
  }

  async function describeTask(arn: string): Promise<Task> {
    return (await o.ecs().send(new DescribeTasksCommand({ cluster, tasks: [arn] }))).tasks![0]!;
  }

  async function logLines(arn: string): Promise<string[]> {
    const r = await o.api()(`/api/v1/runner/clusters/${cluster}/tasks/${taskIdOf(arn)}/logs?container=main`);
    if (r.status !== 200) return [];
    return (JSON.parse(r.body.toString()) as { entries: { line: string }[] }).entries.map((e) => e.line);
  }

  /** The log once a line matches `done`; a task that stops first fails at once, with its reasons. */
  async function logsUntil(arn: string, done: RegExp): Promise<string[]> {
    const seen = await o.until(`task ${taskIdOf(arn)} to log ${done}`, async () => {
      const lines = await logLines(arn);
      if (lines.some((l) => done.test(l))) return { lines };
      const t = await describeTask(arn);
      return t.lastStatus === 'STOPPED' ? { lines: await logLines(arn), stopped: t } : undefined;
    });
    if (seen.stopped && !seen.lines.some((l) => done.test(l))) {
      const c = seen.stopped.containers?.[0];
      throw new Error(
        `task ${taskIdOf(arn)} stopped before logging ${done} (${seen.stopped.stoppedReason}; ` +
          `container: ${c?.reason ?? `exit ${c?.exitCode}`}); its log: ${seen.lines.join(' | ')}`,
      );
    }
    return seen.lines;
  }

  function stopped(arn: string): Promise<Task> {
    return o.until(`task ${taskIdOf(arn)} to stop`, async () => {
      const t = await describeTask(arn);
      return t.lastStatus === 'STOPPED' ? t : undefined;
    });
  }

  async function stopAndWait(arn: string): Promise<Task> {
    await o.ecs().send(new StopTaskCommand({ cluster, task: arn, reason: 'test over' }));
    return stopped(arn);
  }

  return { define, runTask, describeTask, logLines, logsUntil, stopped, stopAndWait };
}
