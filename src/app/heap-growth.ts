// How far V8 lets a server's heap grow past what was live after a full collection before collecting
// again. By default it picks the factor from how cheap collections have been, up to 4: a server whose
// live heap is 30-48 MiB (its code, the rendered narinfos it keeps, the accesses it has yet to write) was
// allowed 145-170 MiB of heap, most of it garbage that had lived just long enough to leave the young
// generation. Serving a million-path cache at random, that put the process at 257-304 MiB of RSS
// (docs/bench-scale.md, run 6). A fixed factor of 1.5 collects the old generation far more often: full
// collections are incremental and concurrent, more of them cost nothing measurable in narinfo throughput
// here (1,000-path and 1,000,000-path caches, alternating runs), and the peak RSS fell to 180-200 MiB.
//
// Set by the processes that serve (`niche serve`, each worker of `--workers N`), not by the library: tests
// and tools that start a server in their own process keep their own heap policy. V8 reads the flag at
// every full collection, so setting it at run time takes effect from the next one.
import { setFlagsFromString } from 'node:v8';

/** The heap may grow to 1 + HEAP_GROWING_PERCENT / 100 times its live size between full collections. */
export const HEAP_GROWING_PERCENT = 50;

export function boundHeapGrowth(): void {
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
