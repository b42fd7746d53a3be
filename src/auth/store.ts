// Small JSON documents under /auth, through the storage driver. The driver is wrapped in
// encryption in production, so what goes through here (private keys included) is encrypted at
// rest without auth/ knowing about it.
import { PathNotFoundError, type StorageDriver } from '../storage/index.ts';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The parsed document at path, or undefined when nothing is stored there. */
export async function readJson(storage: StorageDriver, path: string): Promise<unknown> {
  try {
    return JSON.parse(decoder.decode(await storage.getContent(path)));
  } catch (err) {
    if (err instanceof PathNotFoundError) return undefined;
    throw err;
  }
}

export async function writeJson(storage: StorageDriver, path: string, value: unknown): Promise<void> {
  await storage.putContent(path, encoder.encode(JSON.stringify(value)));
}

/** Children of a directory; a directory nothing was ever written to lists as empty. */
export async function listOrEmpty(storage: StorageDriver, path: string): Promise<string[]> {
  try {
    return await storage.list(path);
  } catch (err) {
    if (err instanceof PathNotFoundError) return [];
    throw err;
  }
}

export async function readText(storage: StorageDriver, path: string): Promise<string | undefined> {
  try {
    return decoder.decode(await storage.getContent(path));
  } catch (err) {
    if (err instanceof PathNotFoundError) return undefined;
    throw err;
  }
}

export async function writeText(storage: StorageDriver, path: string, text: string): Promise<void> {
  await storage.putContent(path, encoder.encode(text));
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
