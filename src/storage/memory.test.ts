import { describeDriver } from '../../test/storage/driver-suite.ts';
import { createMemoryDriver } from './memory.ts';

describeDriver('memory', async () => {
  const driver = createMemoryDriver();
  return {
    driver,
    // Everything, committed or pending: the memory driver has no other hiding place.
    leftovers: async () => {
      const all: string[] = [];
      const walk = async (p: string) => {
        for (const c of await driver.list(p)) {
          if ((await driver.stat(c)).isDir) await walk(c);
          else all.push(c);
        }
      };
      await walk('/');
      return all;
    },
    cleanup: async () => {},
  };
});
