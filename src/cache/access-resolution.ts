// How precisely access times are recorded: shared by the tracker that skips writes within it and by the
// GC plan that allows for it.

/** The coarsest resolution of recorded access times (see accessResolutionMs). */
export const MAX_ACCESS_RESOLUTION_MS = 3_600_000;

/**
 * How stale a recorded access time may be before a new access is written: a tenth of the cache's
 * retention, at most an hour (an hour also without retention, for the quota's least-recently-used order).
 * A path read all day is written once an hour instead of once a flush, and a cache whose hot set is read
 * over and over writes nothing for it: on a million paths each write is a random page of the database
 * (docs/bench-scale.md). GC adds the resolution to the retention (src/cache/gc-plan.ts), so no path goes
 * before `retention` has passed since its last access.
 */
export function accessResolutionMs(retentionMs: number | undefined): number {
  if (retentionMs === undefined) return MAX_ACCESS_RESOLUTION_MS;
  return Math.min(MAX_ACCESS_RESOLUTION_MS, Math.floor(retentionMs / 10));
}
