import { describe, expect, it } from 'vitest';
import { hostLimits } from './runner.ts';

const limits = (processes: string, files: string) =>
  [
    'Limit                     Soft Limit           Hard Limit           Units     ',
    `Max processes             ${processes}                processes `,
    `Max open files            ${files}                files     `,
  ].join('\n');

describe("the host's hard limits a container cannot exceed", () => {
  it('reads nofile and nproc from /proc/self/limits', () => {
    expect(hostLimits(limits('96370                96370', '20000                20000'))).toEqual({
      nofileHard: 20000,
      nprocHard: 96370,
    });
  });
  it('takes unlimited as the kernel ceiling, and goes without nproc when it is not listed', () => {
    expect(hostLimits(limits('unlimited            unlimited', '1024                 1048576'))).toEqual({
      nofileHard: 1048576,
      nprocHard: 4194304,
    });
    expect(hostLimits('')).toEqual({ nofileHard: 1024 });
  });
  it('reads this process', () => {
    expect(hostLimits().nofileHard).toBeGreaterThan(0);
  });
});
