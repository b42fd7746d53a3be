// Events that cross domains: the registry emits them when a write commits, the runner's hooks
// and webhooks consume them. Plain data, no behaviour.

export interface ManifestPushed {
  readonly type: 'manifest.pushed';
  readonly repository: string;
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
  /** The tags this push set (empty for a push by digest without ?tag=). */
  readonly tags: readonly string[];
  /** The subject's digest when the manifest is a referrer (signature, SBOM, ...). */
  readonly subject?: string;
  readonly artifactType?: string;
  readonly at: string;
}

export interface ManifestDeleted {
  readonly type: 'manifest.deleted';
  readonly repository: string;
  readonly digest: string;
  readonly at: string;
}

export interface TagDeleted {
  readonly type: 'tag.deleted';
  readonly repository: string;
  readonly tag: string;
  readonly at: string;
}

export type RegistryEvent = ManifestPushed | ManifestDeleted | TagDeleted;

/**
 * Receives every event once the change it describes has committed. The registry awaits it before
 * answering the client, so a sink that persists the event (the runner's hook journal) makes a
 * 201 mean "committed, and its hooks will run" even if the process dies right after.
 */
export type EventSink = (event: RegistryEvent) => void | Promise<void>;
