// podman, buildah and skopeo with storage, registry config and trust isolated in a temp dir,
// so the suites touch nothing of the machine's own container setup.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type RunResult, run, tool } from './tools.ts';

export interface ContainerTools {
  /** Directory holding berth's ca.crt, for --cert-dir (never --tls-verify=false). */
  readonly certDir: string;
  podman(...args: string[]): Promise<RunResult>;
  buildah(...args: string[]): Promise<RunResult>;
  skopeo(...args: string[]): Promise<RunResult>;
  /** podman login: the credentials land in the auth file podman, buildah and skopeo share here. */
  login(registry: string, username: string, password: string): Promise<RunResult>;
  /** Builds a one-binary busybox image into local storage as `name`, for the given architecture. */
  buildBusybox(name: string, opts?: { arch?: string; message?: string }): Promise<void>;
  cleanup(): Promise<void>;
}

export function containerTools(caPath: string): ContainerTools {
  const dir = mkdtempSync(join(tmpdir(), 'berth-ctr-'));
  const certDir = join(dir, 'certs');
  mkdirSync(certDir);
  copyFileSync(caPath, join(certDir, 'ca.crt'));
  const registriesConf = join(dir, 'registries.conf');
  writeFileSync(registriesConf, 'unqualified-search-registries = []\n');
  const policy = join(dir, 'policy.json');
  writeFileSync(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  writeFileSync(join(dir, 'auth.json'), '{"auths":{}}');
  const env = {
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    REGISTRY_AUTH_FILE: join(dir, 'auth.json'),
    TMPDIR: dir,
  };
  const storage = ['--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--storage-driver', 'vfs'];
  const podman = tool('podman');
  const buildah = tool('buildah');
  const skopeo = tool('skopeo');
  const timeoutMs = 180_000;

  const self: ContainerTools = {
    certDir,
    podman: (...args) => run(podman, [...storage, ...args], { env, timeoutMs }),
    buildah: (...args) => run(buildah, [...storage, ...args], { env, timeoutMs }),
    skopeo: (...args) => run(skopeo, ['--policy', policy, ...args], { env, timeoutMs }),
    login: (registry, username, password) =>
      run(podman, ['login', '--cert-dir', certDir, '-u', username, '--password-stdin', registry], {
        env,
        timeoutMs,
        input: password,
      }),
    async buildBusybox(name, opts = {}) {
      const ctr = (await self.buildah('from', '--arch', opts.arch ?? 'amd64', 'scratch')).stdout.trim();
      await self.buildah('copy', ctr, tool('busybox'), '/bin/busybox');
      await self.buildah(
        'config',
        '--arch',
        opts.arch ?? 'amd64',
        '--os',
        'linux',
        '--cmd',
        JSON.stringify(['/bin/busybox', 'echo', opts.message ?? 'hello from berth']),
        ctr,
      );
      await self.buildah('commit', '-q', '--rm', ctr, name);
    },
    async cleanup() {
      // vfs layers are plain directories; podman's storage may hold read-only files.
      await run('chmod', ['-R', 'u+w', dir]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return self;
}
