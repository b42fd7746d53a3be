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
export { encrypted } from './encrypted.ts';
export { createFsDriver } from './fs.ts';
export {
  createKeyring,
  type Kek,
  type Keyring,
  mutableKeyring,
  newKek,
  parseKeyList,
  readKeyFile,
  writeKeyFile,
} from './keyring.ts';
export { createMemoryDriver } from './memory.ts';
