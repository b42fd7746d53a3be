import { describe, expect, it } from 'vitest';
import { DEFAULT_CAPABILITIES } from './runtime-spec.ts';
import { CLONE_NAMESPACE_FLAGS, defaultSeccompProfile, kernelVersion, seccompArch } from './seccomp.ts';

const profile = (over: Partial<Parameters<typeof defaultSeccompProfile>[0]> = {}) =>
  defaultSeccompProfile({ arch: 'x86_64', kernel: [6, 1], capabilities: DEFAULT_CAPABILITIES, ...over });

/** The rules that name `syscall`. */
const rulesFor = (p: ReturnType<typeof profile>, syscall: string) =>
  p.syscalls.filter((r) => r.names.includes(syscall));

/** Allowed with no condition on its arguments. */
const allowedOutright = (p: ReturnType<typeof profile>, syscall: string) =>
  rulesFor(p, syscall).some((r) => r.action === 'SCMP_ACT_ALLOW' && r.args === undefined);

describe('the default seccomp profile', () => {
  it('denies with EPERM what it does not list, on the host ABI and its 32-bit ones', () => {
    const p = profile();
    expect(p.defaultAction).toBe('SCMP_ACT_ERRNO');
    expect(p.defaultErrnoRet).toBe(1);
    expect(p.architectures).toEqual(['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    expect(profile({ arch: 'aarch64' }).architectures).toEqual(['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
  });

  it('allows what ordinary programs use', () => {
    const p = profile();
    for (const s of ['read', 'openat', 'execve', 'futex', 'epoll_wait', 'setuid', 'chroot', 'prctl'])
      expect(allowedOutright(p, s)).toBe(true);
  });

  it.each([
    'unshare',
    'setns',
    'mount',
    'umount2',
    'fsopen',
    'open_tree',
    'keyctl',
    'add_key',
    'request_key',
    'bpf',
    'perf_event_open',
    'init_module',
    'kexec_load',
    'reboot',
    'swapon',
    'settimeofday',
    'acct',
    'open_by_handle_at',
    'userfaultfd',
    'syslog',
    'sethostname',
    'kcmp',
    'io_uring_setup',
  ])('keeps %s from a container with the default capabilities', (syscall) => {
    expect(rulesFor(profile(), syscall)).toEqual([]);
  });

  it('lets clone make threads and processes but no namespaces, and answers clone3 ENOSYS', () => {
    const p = profile();
    expect(rulesFor(p, 'clone')).toEqual([
      {
        names: ['clone'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
      },
    ]);
    // CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
    expect(CLONE_NAMESPACE_FLAGS).toBe(
      0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000,
    );
    expect(rulesFor(p, 'clone3')).toEqual([{ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 }]);
  });

  it('opens CAP_SYS_ADMIN syscalls only to a container with that capability', () => {
    const admin = profile({ capabilities: [...DEFAULT_CAPABILITIES, 'CAP_SYS_ADMIN'] });
    for (const s of ['mount', 'unshare', 'setns', 'clone', 'clone3'])
      expect(allowedOutright(admin, s)).toBe(true);
    expect(rulesFor(admin, 'clone3').some((r) => r.action === 'SCMP_ACT_ERRNO')).toBe(false);
  });

  it('allows ptrace only on kernels of 4.8 or later (seccomp bypass before)', () => {
    expect(allowedOutright(profile({ kernel: [4, 8] }), 'ptrace')).toBe(true);
    expect(allowedOutright(profile({ kernel: [6, 18] }), 'ptrace')).toBe(true);
    expect(rulesFor(profile({ kernel: [4, 4] }), 'ptrace')).toEqual([]);
    expect(rulesFor(profile({ kernel: [3, 19] }), 'process_vm_readv')).toEqual([]);
  });

  it('refuses AF_ALG and AF_VSOCK sockets and allows the other families', () => {
    const allows = (family: number) =>
      rulesFor(profile(), 'socket').some((r) =>
        r.args!.every(
          (a) =>
            (a.op === 'SCMP_CMP_LT' && family < a.value) ||
            (a.op === 'SCMP_CMP_EQ' && family === a.value) ||
            (a.op === 'SCMP_CMP_GT' && family > a.value),
        ),
      );
    for (const family of [1, 2, 10, 16, 17, 39, 41]) expect(allows(family)).toBe(true); // unix, inet, inet6, netlink, packet, ...
    expect(allows(38)).toBe(false); // AF_ALG
    expect(allows(40)).toBe(false); // AF_VSOCK
  });

  it('adds each architecture its own syscalls', () => {
    expect(allowedOutright(profile(), 'arch_prctl')).toBe(true);
    expect(rulesFor(profile(), 'set_tls')).toEqual([]);
    expect(allowedOutright(profile({ arch: 'aarch64' }), 'set_tls')).toBe(true);
    expect(rulesFor(profile({ arch: 'aarch64' }), 'arch_prctl')).toEqual([]);
  });

  it('reads the host', () => {
    expect(seccompArch('x64')).toBe('x86_64');
    expect(seccompArch('arm64')).toBe('aarch64');
    expect(seccompArch('s390x')).toBeUndefined();
    expect(kernelVersion('6.18.44-fc-v1300')).toEqual([6, 18]);
    expect(kernelVersion('4.8.0')).toEqual([4, 8]);
    expect(() => kernelVersion('vanilla')).toThrow(/MAJOR.MINOR/);
  });
});
