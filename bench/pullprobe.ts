// Focused probe for one case: pull throughput at concurrency 4 against one registry, to compare
// a change quickly without the full benchmark.
//   node bench/pullprobe.ts https://127.0.0.1:PORT CA_PATH [rounds] [MiB per blob, default 16]
// A berth with auth on is signed in to as admin with BERTH_ADMIN_PASSWORD from the environment.
import { createHash, randomBytes } from 'node:crypto';
import { client, expectStatus } from './client.ts';

const [base, ca, roundsArg, mibArg] = process.argv.slice(2);
const rounds = Number(roundsArg ?? 8);
const password = process.env.BERTH_ADMIN_PASSWORD;
const c = client(base!, ca!, 4, password ? { username: 'admin', password } : undefined);
const mib = Number(mibArg ?? 16);
const size = mib * 1024 * 1024;
const blobs = Array.from({ length: 4 }, () => {
  const bytes = randomBytes(size);
  return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
});
for (const b of blobs) {
  const post = await c.call('POST', '/v2/probe/blobs/uploads/');
  expectStatus(post, 202, 'POST');
  const loc = new URL(String(post.headers.location), base);
  loc.searchParams.set('digest', b.digest);
  expectStatus(await c.call('PUT', loc.pathname + loc.search, { body: b.bytes }), 201, 'PUT');
}
const t0 = performance.now();
for (let r = 0; r < rounds; r++) {
  await Promise.all(
    blobs.map(async (b) => {
      const res = await c.call('GET', `/v2/probe/blobs/${b.digest}`, { hash: true });
      if (res.digest !== b.digest) throw new Error('bad digest');
    }),
  );
}
const s = (performance.now() - t0) / 1000;
console.log(`pull ${mib} MiB c=4: ${((rounds * 4 * size) / 1024 / 1024 / s).toFixed(0)} MiB/s`);
c.close();
