// The default seccomp profile every container runs under: the allow list dockerd and containerd
// ship (moby/profiles seccomp/default.json, containerd contrib/seccomp), for x86_64 and aarch64,
// written here as data and resolved per host and capability set by defaultSeccompProfile().
//
// Anything not allowed fails with EPERM. What that keeps from a container, as those profiles do:
// new namespaces (unshare, setns, clone with CLONE_NEW* flags, clone3), mount and the new mount
// API, keyctl/add_key/request_key (the keyring is not namespaced), bpf, perf_event_open, ptrace
// and process_vm_* on kernels before 4.8 (where ptrace could bypass seccomp), kernel modules,
// kexec, reboot, swapon, the clock, acct, open_by_handle_at (the "shocker" escape), userfaultfd,
// and sockets of AF_ALG and AF_VSOCK. Rules tied to a capability (CAP_SYS_ADMIN, CAP_SYS_PTRACE,
// ...) only open their syscalls to a container that has it, and berth gives none of those.
//
// Syscall names newer than the host's libseccomp are skipped by the runtime; runc answers them
// with ENOSYS, so programs fall back as they would on an older kernel.

export type SeccompArch = 'x86_64' | 'aarch64';

export interface OciSeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: 'SCMP_CMP_LT' | 'SCMP_CMP_EQ' | 'SCMP_CMP_GT' | 'SCMP_CMP_MASKED_EQ';
}

export interface OciSeccompRule {
  names: string[];
  action: 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO';
  errnoRet?: number;
  args?: OciSeccompArg[];
}

/** The runtime-spec `linux.seccomp` object. */
export interface OciSeccomp {
  defaultAction: 'SCMP_ACT_ERRNO';
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: OciSeccompRule[];
}

const EPERM = 1;
const ENOSYS = 38;
const AF_ALG = 38;
const AF_VSOCK = 40;
/** CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET */
export const CLONE_NAMESPACE_FLAGS = 0x7e020000;

interface Rule {
  /** Whitespace-separated syscall names. */
  names: string;
  /** Fail with this errno instead of allowing. */
  errno?: number;
  args?: OciSeccompArg[];
  /** Only for a container with this capability. */
  withCapability?: string;
  /** Only for a container without this capability. */
  withoutCapability?: string;
  /** Only on this architecture. */
  arch?: SeccompArch;
  /** Only on kernels at least this new ([major, minor]). */
  minKernel?: readonly [number, number];
}

const allowedEverywhere = `
  accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
  clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
  clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3
  epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
  epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
  fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
  fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
  fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
  futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
  geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
  getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
  get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid
  getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
  io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set
  io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
  lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
  lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
  memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
  mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
  mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall
  munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
  pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
  pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
  pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg
  remap_file_pages removexattr removexattrat rename renameat renameat2 restart_syscall rmdir rseq
  rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
  rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
  sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
  sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
  sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send
  sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid
  setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid
  setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt
  set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget
  shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat
  stat64 statfs statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee
  tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
  timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
  timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
  uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
`;

const rules: readonly Rule[] = [
  { names: allowedEverywhere },
  // Before 4.8 a traced process could skip the seccomp check of its next syscall.
  { names: 'process_vm_readv process_vm_writev ptrace', minKernel: [4, 8] },
  // Every address family but AF_ALG (kernel crypto) and AF_VSOCK (host sockets): three single
  // conditions, since runc turns several conditions on one argument into an OR.
  { names: 'socket', args: [{ index: 0, value: AF_ALG, op: 'SCMP_CMP_LT' }] },
  { names: 'socket', args: [{ index: 0, value: AF_ALG + 1, op: 'SCMP_CMP_EQ' }] },
  { names: 'socket', args: [{ index: 0, value: AF_VSOCK, op: 'SCMP_CMP_GT' }] },
  // personality: only the execution domains programs actually ask for (PER_LINUX, PER_LINUX32,
  // UNAME26, UNAME26|PER_LINUX32, and the 0xffffffff query).
  ...[0x0, 0x8, 0x20000, 0x20008, 0xffffffff].map(
    (value): Rule => ({ names: 'personality', args: [{ index: 0, value, op: 'SCMP_CMP_EQ' }] }),
  ),
  { names: 'arch_prctl modify_ldt', arch: 'x86_64' },
  {
    names: 'arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls',
    arch: 'aarch64',
  },
  { names: 'open_by_handle_at', withCapability: 'CAP_DAC_READ_SEARCH' },
  {
    names: `bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie
      lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr move_mount open_tree
      perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog umount umount2 unshare`,
    withCapability: 'CAP_SYS_ADMIN',
  },
  // Threads and plain forks, but no new namespaces: (flags & CLONE_NAMESPACE_FLAGS) == 0.
  {
    names: 'clone',
    args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
    withoutCapability: 'CAP_SYS_ADMIN',
  },
  // clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc fall back to clone.
  { names: 'clone3', errno: ENOSYS, withoutCapability: 'CAP_SYS_ADMIN' },
  { names: 'reboot', withCapability: 'CAP_SYS_BOOT' },
  { names: 'chroot', withCapability: 'CAP_SYS_CHROOT' },
  { names: 'delete_module init_module finit_module', withCapability: 'CAP_SYS_MODULE' },
  { names: 'acct', withCapability: 'CAP_SYS_PACCT' },
  {
    names: 'kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace',
    withCapability: 'CAP_SYS_PTRACE',
  },
  { names: 'iopl ioperm', withCapability: 'CAP_SYS_RAWIO' },
  { names: 'settimeofday stime clock_settime clock_settime64', withCapability: 'CAP_SYS_TIME' },
  { names: 'vhangup', withCapability: 'CAP_SYS_TTY_CONFIG' },
  { names: 'get_mempolicy mbind set_mempolicy set_mempolicy_home_node', withCapability: 'CAP_SYS_NICE' },
  { names: 'syslog', withCapability: 'CAP_SYSLOG' },
  { names: 'bpf', withCapability: 'CAP_BPF' },
  { names: 'perf_event_open', withCapability: 'CAP_PERFMON' },
];

/** The seccomp architectures a host's containers may use: its own and the 32-bit ABIs beside it. */
const architectures: Record<SeccompArch, string[]> = {
  x86_64: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
  aarch64: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
};

/** This host's architecture in seccomp's terms, or undefined when berth has no profile for it. */
export function seccompArch(nodeArch: string = process.arch): SeccompArch | undefined {
  if (nodeArch === 'x64') return 'x86_64';
  if (nodeArch === 'arm64') return 'aarch64';
  return undefined;
}

/** [major, minor] of a kernel release string ("6.18.44-fc-v1300"). */
export function kernelVersion(release: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) throw new Error(`kernel release '${release}' does not start with MAJOR.MINOR`);
  return [Number(m[1]), Number(m[2])];
}

function atLeast(kernel: readonly [number, number], min: readonly [number, number]): boolean {
  return kernel[0] > min[0] || (kernel[0] === min[0] && kernel[1] >= min[1]);
}

function words(s: string): string[] {
  return s.trim().split(/\s+/);
}

/** The profile for a container with `capabilities` on a host of `arch` running `kernel`. */
export function defaultSeccompProfile(o: {
  arch: SeccompArch;
  kernel: readonly [number, number];
  capabilities: readonly string[];
}): OciSeccomp {
  const caps = new Set(o.capabilities);
  const syscalls: OciSeccompRule[] = [];
  for (const r of rules) {
    if (r.arch !== undefined && r.arch !== o.arch) continue;
    if (r.minKernel !== undefined && !atLeast(o.kernel, r.minKernel)) continue;
    if (r.withCapability !== undefined && !caps.has(r.withCapability)) continue;
    if (r.withoutCapability !== undefined && caps.has(r.withoutCapability)) continue;
    const out: OciSeccompRule = {
      names: words(r.names),
      action: r.errno === undefined ? 'SCMP_ACT_ALLOW' : 'SCMP_ACT_ERRNO',
    };
    if (r.errno !== undefined) out.errnoRet = r.errno;
    if (r.args) out.args = r.args.map((a) => ({ ...a }));
    syscalls.push(out);
  }
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: EPERM,
    architectures: [...architectures[o.arch]],
    syscalls,
  };
}
