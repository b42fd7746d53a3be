import { defineConfig } from 'vitest/config';

// Unit tests live beside the code (src/**/*.test.ts); suites that span modules or drive real
// clients live in test/. Real-client suites are slow on 2 cores, hence the generous timeouts.
export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    pool: 'forks',
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
