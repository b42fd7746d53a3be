// The referrers API: manifests that name another manifest as their `subject` (signatures,
// SBOMs, attestations), indexed by subject when they are pushed so a query is one listing.
import type { StorageDriver } from '../storage/index.ts';
import { isNotFound } from './blobs.ts';
import type { Digest } from './digest.ts';
import type { Descriptor } from './manifests.ts';
import * as paths from './paths.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function createReferrers(storage: StorageDriver) {
  return {
    async add(name: string, subject: Digest, referrer: Digest, d: Descriptor): Promise<void> {
      await storage.putContent(
        paths.referrerEntry(name, subject, referrer),
        encoder.encode(JSON.stringify(d)),
      );
    },

    async remove(name: string, subject: Digest, referrer: Digest): Promise<void> {
      try {
        await storage.delete(paths.referrerEntry(name, subject, referrer));
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    },

    /** Descriptors of the manifests referring to subject, optionally of one artifactType. */
    async list(name: string, subject: Digest, artifactType?: string): Promise<Descriptor[]> {
      let entries: string[];
      try {
        entries = await storage.list(paths.referrersDir(name, subject));
      } catch (e) {
        if (isNotFound(e)) return [];
        throw e;
      }
      const all = await Promise.all(
        entries.map(async (p) => {
          try {
            return JSON.parse(decoder.decode(await storage.getContent(p))) as Descriptor;
          } catch (e) {
            if (isNotFound(e)) return undefined; // removed while we listed
            throw e;
          }
        }),
      );
      return all.filter(
        (d): d is Descriptor =>
          d !== undefined && (artifactType === undefined || d.artifactType === artifactType),
      );
    },
  };
}

export type Referrers = ReturnType<typeof createReferrers>;
