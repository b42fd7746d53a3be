// The few host operations Node's fs lacks (device nodes, fifos, extended attributes, bind
// mounts), done by the Debian tools through execFile with argument arrays: no shell ever parses a
// path or value. mknod comes from coreutils; setfattr/getfattr from the `attr` package;
// mount/umount from util-linux.
import { execFile } from 'node:child_process';
import { lchown, readFile } from 'node:fs/promises';

export type NodeType = 'c' | 'b' | 'p';

export interface Host {
  /** Creates a character device, block device or fifo at path (which must not exist). */
  mknod(path: string, type: NodeType, major: number, minor: number): Promise<void>;
  /** Sets one extended attribute on path itself, never on a symlink's target. */
  setXattr(path: string, name: string, value: Buffer | string): Promise<void>;
  /** One extended attribute of path itself, or null when it has none by that name. */
  getXattr(path: string, name: string): Promise<Buffer | null>;
  /** lchown that answers false instead of failing when the ids cannot be set (not root, or an id
   * this user namespace does not map); other errors still throw. */
  lchownSafe(path: string, uid: number, gid: number): Promise<boolean>;
  /** Bind-mounts `source` (recursively, private) on `target`, which must exist. The source is
   * taken as given, never canonicalised: /proc/PID/fd/N mounts the very file that descriptor holds. */
  bindMount(source: string, target: string): Promise<void>;
  /** Detaches the mount at `target` (lazily: whoever still uses it keeps it until done). */
  unmount(target: string): Promise<void>;
  /** Mount points of berth's mount namespace at or under `dir`, deepest first. */
  mountsUnder(dir: string): Promise<string[]>;
}

interface Run {
  stdout: Buffer;
  stderr: string;
}

function run(file: string, args: string[], missingHint: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'buffer', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const errText = stderr.toString('utf8').trim();
      if (!err) return resolve({ stdout, stderr: errText });
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        return reject(new Error(`${file} is not installed (${missingHint})`, { cause: err }));
      const e = new Error(`${file} ${args.join(' ')}: ${errText || err.message}`, { cause: err });
      reject(Object.assign(e, { stderr: errText }));
    });
  });
}

const attrHint = 'apt-get install attr';
const mountHint = 'apt-get install mount';

function checkId(what: string, n: number): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`mknod: bad ${what} ${n}`);
}

export function createHost(): Host {
  return {
    async mknod(path, type, major, minor) {
      const args = ['-m', '0600', '--', path, type];
      if (type !== 'p') {
        checkId('major', major);
        checkId('minor', minor);
        args.push(String(major), String(minor));
      }
      await run('mknod', args, 'apt-get install coreutils');
    },

    async setXattr(path, name, value) {
      const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
      // 0x-hex carries any bytes (security.capability is binary) without quoting rules.
      await run('setfattr', ['-h', '-n', name, '-v', `0x${bytes.toString('hex')}`, '--', path], attrHint);
    },

    async getXattr(path, name) {
      try {
        const { stdout } = await run(
          'getfattr',
          ['-h', '--absolute-names', '--only-values', '-n', name, '--', path],
          attrHint,
        );
        return stdout;
      } catch (err) {
        if (/No such attribute/i.test((err as { stderr?: string }).stderr ?? '')) return null;
        throw err;
      }
    },

    async lchownSafe(path, uid, gid) {
      try {
        await lchown(path, uid, gid);
        return true;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPERM' || code === 'EINVAL') return false;
        throw err;
      }
    },

    async bindMount(source, target) {
      await run(
        'mount',
        ['--no-canonicalize', '--rbind', '--make-rprivate', '--', source, target],
        mountHint,
      );
    },

    async unmount(target) {
      await run('umount', ['--lazy', '--', target], mountHint);
    },

    async mountsUnder(dir) {
      const text = await readFile('/proc/self/mountinfo', 'utf8');
      const out: string[] = [];
      for (const line of text.split('\n')) {
        const field = line.split(' ')[4];
        if (!field) continue;
        const path = field.replace(/\\([0-7]{3})/g, (_m, o: string) =>
          String.fromCharCode(Number.parseInt(o, 8)),
        );
        if (path === dir || path.startsWith(`${dir}/`)) out.push(path);
      }
      return out.sort((a, b) => b.length - a.length);
    },
  };
}
