#!/usr/bin/env node
// `berth <command> [flags]`: argument parsing only; the work happens in main.ts.
// Every filesystem call and fsync runs in libuv's thread pool, four threads by default: with
// several uploads committing at once, fsyncs queue behind each other. Set before any I/O.
process.env.UV_THREADPOOL_SIZE ??= '16';

import { parseArgs } from 'node:util';
import { configReference, loadConfig } from './config.ts';
import { ConfigError } from './errors.ts';
import { keysCommand, start } from './main.ts';

const usage = `berth — an OCI registry with an embedded task runner

Usage:
  berth serve [--listen HOST:PORT] [--data DIR] [--config FILE]
  berth keys list | rotate | rewrap | retire KEY_ID | encrypt-plaintext [--data DIR] [--config FILE]
  berth --help | --version

Keys (encryption at rest):
  list                 the KEKs, which is current, and how many objects each one wraps
  rotate               add a new current KEK and re-wrap every data key under it (no blob is
                       rewritten; a running berth picks the new key file up within seconds)
  rewrap               re-wrap data keys still under an older KEK
  retire KEY_ID        remove a KEK, refused while any object still uses it
  encrypt-plaintext    rewrite objects stored before encryption was on

Flags:
  --listen HOST:PORT   address to listen on (default 0.0.0.0:5000; port 0 picks a free port)
  --data DIR           data directory (default ./data): TLS material and, on the filesystem
                       driver, all blobs and metadata
  --config FILE        JSON config file; keys as below, nested ({"tls": {"certFile": ...}})
  -h, --help           this text
  --version            print the version

Every config key can also be set in the environment (BERTH_ + the key path in upper snake
case). Precedence: flags > environment > config file > defaults.

Config keys:
${configReference().join('\n')}
`;

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (e) {
    process.stderr.write(`berth: ${(e as Error).message}\n\n${usage}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(usage);
    return 0;
  }
  if (values.version) {
    const pkg = await import('../package.json', { with: { type: 'json' } });
    process.stdout.write(`berth ${pkg.default.version}\n`);
    return 0;
  }
  const command = positionals[0] ?? 'serve';
  if (command !== 'serve' && command !== 'keys') {
    process.stderr.write(`berth: unknown command ${command}\n\n${usage}`);
    return 2;
  }
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig({ file: values.config, flags: { listen: values.listen, data: values.data } });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`berth: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (command === 'keys') {
    try {
      return await keysCommand(config, positionals.slice(1), (line) => process.stdout.write(`${line}\n`));
    } catch (e) {
      process.stderr.write(`berth keys: ${(e as Error).message}\n`);
      return 1;
    }
  }
  let berth: Awaited<ReturnType<typeof start>>;
  try {
    berth = await start(config);
  } catch (e) {
    process.stderr.write(`berth: cannot start: ${(e as Error).message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      berth.log.info({ signal }, 'signal received');
      berth.stop().then(resolve, (e) => {
        berth.log.error({ err: e }, 'shutdown failed');
        resolve();
      });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  berth.log.flush();
  return 0;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      listen: { type: 'string' },
      data: { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`berth: ${(e as Error).stack ?? e}\n`);
    process.exitCode = 1;
  },
);
