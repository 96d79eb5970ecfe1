// Whether this replica can do its work: the metadata store answers a query and the blob store takes a
// write (an unwritable blob directory or a bucket that refuses writes makes every upload fail, while
// reads may still work). Used by `GET /readyz`, so a load balancer sends traffic only to replicas that can
// serve it. Migrations ran before the server started listening, so a listening replica has them.
//
// Probes are bounded: each check has a timeout, concurrent callers share one check in flight, and a
// result is reused for a short while, so a flood of readiness requests costs the backends nothing more.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { MetadataStore } from '../db/metadata-store.js';
import type { BlobStore } from '../storage/blob-store.js';

export type Component = 'metadata' | 'blobs';

export interface ComponentState {
  readonly component: Component;
  readonly ok: boolean;
  /**
   * Why it is not ok, as a code (`EACCES`, `ECONNREFUSED`, `DATABASE_FAILURE`, `TIMEOUT`, …): the answer may
   * be public, so no message, path or host; the log has the whole error.
   */
  readonly reason?: string;
  /** How long the check took. */
  readonly ms: number;
}

export interface ReadinessReport {
  readonly ready: boolean;
  readonly components: readonly ComponentState[];
}

export interface ReadinessOptions {
  /** A check that takes longer than this fails. */
  readonly timeoutMs?: number;
  /** A report is reused for this long. */
  readonly reuseMs?: number;
  readonly now?: () => number;
  /** Called with each failed check's whole error. */
  readonly onFailure?: (component: Component, error: unknown) => void;
}

const PROBE_BODY = Buffer.from('niche readiness probe\n');

export class Readiness {
  readonly #db: MetadataStore;
  readonly #blobs: BlobStore;
  readonly #timeoutMs: number;
  readonly #reuseMs: number;
  readonly #now: () => number;
  /** One key per process: replicas sharing a bucket never touch each other's probe. */
  readonly #probeKey = `health/probe-${randomBytes(8).toString('hex')}`;
  readonly #onFailure: (component: Component, error: unknown) => void;
  #last: { report: ReadinessReport; at: number } | undefined;
  #inFlight: Promise<ReadinessReport> | undefined;
  /** Probes still running after their check gave up on them: never more than one per component. */
  readonly #stuck = new Set<Component>();

  constructor(db: MetadataStore, blobs: BlobStore, options: ReadinessOptions = {}) {
    this.#db = db;
    this.#blobs = blobs;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#reuseMs = options.reuseMs ?? 1_000;
    this.#now = options.now ?? Date.now;
    this.#onFailure = options.onFailure ?? (() => undefined);
  }

  check(): Promise<ReadinessReport> {
    const last = this.#last;
    if (last !== undefined && this.#now() - last.at < this.#reuseMs) return Promise.resolve(last.report);
    this.#inFlight ??= this.#checkNow().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  async #checkNow(): Promise<ReadinessReport> {
    const components = await Promise.all([
      this.#probe('metadata', () => this.#db.ping()),
      this.#probe('blobs', async () => {
        await this.#blobs.put(this.#probeKey, Readable.from([PROBE_BODY]), {
          expectedSize: PROBE_BODY.length,
        });
        await this.#blobs.delete(this.#probeKey);
      }),
    ]);
    const report = { ready: components.every((state) => state.ok), components };
    this.#last = { report, at: this.#now() };
    return report;
  }

  async #probe(component: Component, work: () => Promise<void>): Promise<ComponentState> {
    if (this.#stuck.has(component)) {
      return { component, ok: false, reason: 'TIMEOUT', ms: 0 };
    }
    const started = performance.now();
    const ms = (): number => Math.round((performance.now() - started) * 10) / 10;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => {
        resolve('timeout');
      }, this.#timeoutMs);
    });
    const running = work();
    try {
      if ((await Promise.race([running, timeout])) === 'timeout') {
        this.#stuck.add(component);
        running
          .catch(() => undefined)
          .finally(() => {
            this.#stuck.delete(component);
          });
        this.#onFailure(component, new Error(`no answer within ${this.#timeoutMs} ms`));
        return { component, ok: false, reason: 'TIMEOUT', ms: ms() };
      }
      return { component, ok: true, ms: ms() };
    } catch (error) {
      this.#onFailure(component, error);
      return { component, ok: false, reason: codeOf(error), ms: ms() };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The most specific code in the error's cause chain (an errno code beats niche's own), or ERROR. */
function codeOf(error: unknown): string {
  let code: string | undefined;
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const found = (current as { code?: unknown }).code;
    if (typeof found === 'string' && /^[A-Z0-9_]{1,40}$/.test(found)) code = found;
    current = current.cause;
  }
  return code ?? 'ERROR';
}
