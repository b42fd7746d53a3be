// Public surface of storage/: the contract, its errors, the drivers and the checking wrapper.
export { checked, isValidPath } from './checked.ts';
export {
  type ChunkSink,
  type FileInfo,
  type FileWriter,
  InvalidOffsetError,
  InvalidPathError,
  PathNotFoundError,
  type StorageDriver,
  StorageError,
} from './driver.ts';
export { createFsDriver } from './fs.ts';
export { createMemoryDriver } from './memory.ts';
