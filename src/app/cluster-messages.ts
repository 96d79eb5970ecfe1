// What the primary of `niche serve --workers N` (src/app/cluster-primary.ts) and its workers
// (src/app/cluster-worker.ts) say to each other over the cluster's IPC channel (structured clone,
// `serialization: 'advanced'`). Every message carries `niche`, its type; anything else on the channel
// (Node's own cluster messages travel apart) is ignored.
import type { MemoryChange } from '../cache/cache-service.js';
import type { ServeConfig } from '../config.js';
import type { ErrorCode, ErrorKind } from '../errors.js';
import type { MetricsSnapshot } from '../metrics/server-metrics.js';

/** What a worker tells the primary once it listens, for the start-up banner. */
export interface WorkerListening {
  readonly url: string;
  readonly publicUrl: string;
  readonly ssh: readonly { readonly port: number; readonly hostKey: string }[];
  readonly localStore:
    | {
        readonly storeDir: string;
        readonly mountPath: string;
        readonly mountAtRoot: boolean;
        readonly publicKeys: readonly string[];
      }
    | undefined;
}

/** Primary → worker. */
export type ToWorker =
  /** The configuration the primary loaded and checked: the worker starts serving it. */
  | { readonly niche: 'start'; readonly config: ServeConfig }
  /** Asks for the worker's metrics (answered with `snapshot` and the same id). */
  | { readonly niche: 'snapshot'; readonly id: number }
  /** Answers the worker's `metrics`: the whole server's metrics text, or why there is none. */
  | { readonly niche: 'metrics'; readonly id: number; readonly text?: string; readonly error?: string }
  /** Another worker (or the primary's GC) changed something this worker may hold in memory. */
  | { readonly niche: 'memory'; readonly change: MemoryChange };

/** Worker → primary. */
export type FromWorker =
  /**
   * The worker listens for messages now (and wants `start`). Not `online`: cluster sends that before an ES
   * module worker has run a line, and a message arriving before its listener is lost.
   */
  | { readonly niche: 'ready' }
  | { readonly niche: 'listening'; readonly info: WorkerListening }
  /** The worker could not start: its error, so the primary fails as one process would have. */
  | {
      readonly niche: 'failed';
      readonly error:
        | { readonly kind: ErrorKind; readonly code: ErrorCode; readonly message: string }
        | { readonly message: string };
    }
  | { readonly niche: 'snapshot'; readonly id: number; readonly metrics: MetricsSnapshot }
  /** Asks for the whole server's metrics (a scrape of `GET /metrics` on the main port). */
  | { readonly niche: 'metrics'; readonly id: number }
  /** This worker dropped something from memory; the others should too. */
  | { readonly niche: 'memory'; readonly change: MemoryChange };

function isClusterMessage(value: unknown): boolean {
  return (
    typeof value === 'object' && value !== null && typeof (value as { niche?: unknown }).niche === 'string'
  );
}

/** Whether `value` is one of niche's messages to a worker (its fields are trusted: both ends are niche). */
export function isToWorker(value: unknown): value is ToWorker {
  return isClusterMessage(value);
}

/** Whether `value` is one of niche's messages from a worker. */
export function isFromWorker(value: unknown): value is FromWorker {
  return isClusterMessage(value);
}
