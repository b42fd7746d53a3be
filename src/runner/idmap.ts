// The one user namespace mapping every task runs under: container uids and gids 0-65535 are host
// ids hostIdStart .. hostIdStart + 65535 (runner.userNamespace.hostIdStart), as dockerd's
// userns-remap gives every container the same range. Container root is an unprivileged host user:
// its capabilities act only on what its own namespaces own, and host files it did not get from
// berth (owned by host ids outside the range) look like nobody's to it.
//
// runc 1.1 has no idmapped mounts, so everything a container sees as its own must be owned by the
// mapped ids on disk: layers are unpacked with shifted ids (layers.ts, cached per mapping), and
// the overlay upper dir, task volumes and per-task network files are chowned to the mapped root.

/** Container ids 0..ID_MAP_SIZE-1 are mapped; anything else in an image cannot be represented. */
export const ID_MAP_SIZE = 65536;

export interface IdMapping {
  /** The host uid and gid of container id 0. */
  readonly hostIdStart: number;
}

/** The host id of a container uid or gid, or undefined when the mapping does not cover it. */
export function hostId(map: IdMapping, containerId: number): number | undefined {
  if (!Number.isInteger(containerId) || containerId < 0 || containerId >= ID_MAP_SIZE) return undefined;
  return map.hostIdStart + containerId;
}

/** The host ids container root owns files as. */
export function rootOwner(map: IdMapping): { uid: number; gid: number } {
  return { uid: map.hostIdStart, gid: map.hostIdStart };
}

/** runc's linux.uidMappings / gidMappings for the mapping. */
export function ociMappings(map: IdMapping): { containerID: number; hostID: number; size: number }[] {
  return [{ containerID: 0, hostID: map.hostIdStart, size: ID_MAP_SIZE }];
}

/** The directory name a mapping's unpacked layers live under (layers.ts). */
export function layerCacheName(map: IdMapping): string {
  return `userns-${map.hostIdStart}-${ID_MAP_SIZE}`;
}
