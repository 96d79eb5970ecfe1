// The server's Prometheus metrics: one registry per running server (never prom-client's global one, so
// several servers in one process, as in tests, keep separate counts), the numbers the front ends add to,
// and their rendering in the Prometheus text format (`GET /metrics`, src/http/routes/metrics.ts). The
// process metrics (CPU, memory, event-loop delay, GC) describe the process, not a server: they are
// collected once per process, into a registry of their own that every server's rendering includes (a
// collector per server would add a GC observer and a timer each time a server starts, never removed).
//
// The hot paths only add to numbers: every cache gets one CacheCounters, made the first time it is seen
// and reused for every request after, so counting a narinfo hit is a map lookup, an array increment and a
// bucket search, with no label objects and no strings built (src/metrics/collected-metric.ts says why
// prom-client's own counters are not used there). Label values are bounded: cache names only of caches
// that exist (`_unknown` for names that are not caches, `_none` for requests that name no cache,
// `_local` for the host's own store), route kinds, status classes, error codes and store operations;
// never paths, tokens or addresses.
import type { Server, Socket } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { CacheObserver, UploadKind } from '../cache/cache-observer.js';
import { CollectedMetric, Distribution, type Sample } from './collected-metric.js';

/** What a request was for; its index in ROUTE_KINDS is what the hot paths pass. */
export const ROUTE_KINDS = ['narinfo', 'nar', 'upload', 'api', 'other'] as const;
export const RouteKind = { narinfo: 0, nar: 1, upload: 2, api: 3, other: 4 } as const;
export type RouteKindIndex = (typeof RouteKind)[keyof typeof RouteKind];

/** Status classes by `status / 100`; index 0: no response was sent (the client went away first). */
const STATUS_CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/** Request durations, seconds: a narinfo from memory, from the database, a small NAR, a large one. */
const REQUEST_BUCKETS = [0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10];
/** Store operation durations, seconds. */
const STORE_BUCKETS = [0.001, 0.01, 0.1, 1];

/** Refusal codes that mean the upload failed its verification (hashes, sizes, structure, references). */
const VERIFICATION_CODES: ReadonlySet<string> = new Set([
  'FILE_HASH_MISMATCH',
  'FILE_SIZE_MISMATCH',
  'NAR_HASH_MISMATCH',
  'NAR_SIZE_MISMATCH',
  'NAR_INVALID',
  'COMPRESSION_MISMATCH',
  'STORE_PATH_MISMATCH',
  'REFERENCE_MISSING',
  'LISTING_MISMATCH',
]);

/** Everything counted for one cache label. */
export class CacheCounters {
  readonly label: string;
  /** Requests by route kind and status class, at `kind * STATUS_CLASSES.length + class`. */
  readonly requests = new Float64Array(ROUTE_KINDS.length * STATUS_CLASSES.length);
  narinfoHits = 0;
  narinfoMisses = 0;
  readonly uploadsAccepted: Record<UploadKind, number> = { nar: 0, narinfo: 0, path: 0 };
  /** Refused uploads by `<kind> <code>`. */
  readonly uploadsRefused = new Map<string, number>();
  verificationFailures = 0;

  constructor(label: string) {
    this.label = label;
  }
}

/** One store operation's timings and failures. */
export class StoreOperation {
  readonly store: string;
  readonly operation: string;
  readonly durations = new Distribution(STORE_BUCKETS);
  errors = 0;

  constructor(store: string, operation: string) {
    this.store = store;
    this.operation = operation;
  }

  done(startedAt: number): void {
    this.durations.observe((performance.now() - startedAt) / 1000);
  }
}

/** What the metrics need of the cache service, attached once it exists. */
export interface ObservedService {
  /** Whether `name` is a cache that exists (as last seen; never a store lookup). */
  isKnownCache(name: string): boolean;
  readonly uploadsInProgress: number;
}

let processRegistry: Registry | undefined;

/** The process metrics, collected from the first call on. */
function processMetrics(): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** What an SSH session ran: `nix-store --serve` (ssh://), `nix-daemon --stdio` (ssh-ng://), else other. */
function sshProtocol(command: string | undefined): 'ssh' | 'ssh-ng' | 'other' {
  const words = command?.trim().split(/\s+/) ?? [];
  if (words[0] === 'nix-store' && words[1] === '--serve') return 'ssh';
  if (words[0] === 'nix-daemon' && words[1] === '--stdio') return 'ssh-ng';
  return 'other';
}

/** What one garbage collection did (the fields of src/cache/gc.ts's report that metrics count). */
export interface GcOutcome {
  readonly paths: number;
  readonly nars: number;
  readonly bytes: number;
}

/** Every metric of one process as prom-client's JSON, what a cluster primary aggregates. */
export type MetricsSnapshot = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

export interface ServerMetricsOptions {
  /**
   * What `render` answers instead of this process's own metrics: in a worker of `niche serve --workers
   * N`, the whole server's, summed over every process by the primary (src/metrics/cluster-metrics.ts).
   */
  readonly render?: (() => Promise<string>) | undefined;
}

export class ServerMetrics implements CacheObserver {
  readonly registry = new Registry();
  /** For requests naming something that is not a cache. */
  readonly unknown = new CacheCounters('_unknown');
  /** For requests that name no cache (`/api/v1/tokens`, `/healthz`, `/`). */
  readonly none = new CacheCounters('_none');
  /** For the host's own Nix store (`--local-store`). */
  readonly local = new CacheCounters('_local');
  readonly #caches = new Map<string, CacheCounters>();
  readonly #durations = ROUTE_KINDS.map(() => new Distribution(REQUEST_BUCKETS));
  readonly #storeOperations: StoreOperation[] = [];
  readonly #sockets = new Set<Socket>();
  #closedBytesRead = 0;
  #closedBytesWritten = 0;
  #service: ObservedService | undefined;
  /** SSH sessions by `<cache> <protocol> <result>`. */
  readonly #sshSessions = new Map<string, number>();
  #sshOpen = 0;
  readonly #gcRuns = { ok: 0, failed: 0, skipped: 0 };
  #gcPaths = 0;
  #gcNars = 0;
  #gcBytes = 0;
  #gcLastSuccess = 0;

  readonly #process = processMetrics();
  readonly #render: (() => Promise<string>) | undefined;

  constructor(options: ServerMetricsOptions = {}) {
    this.#render = options.render;
    this.#register();
  }

  attachService(service: ObservedService): void {
    this.#service = service;
  }

  /**
   * The counters of cache `name`: its own if it exists (`exists`: the caller holds its record), else the
   * shared `_unknown` ones, so a client asking for made-up names cannot add label values.
   */
  forCache(name: string, exists = false): CacheCounters {
    const counters = this.#caches.get(name);
    if (counters !== undefined) return counters;
    if (!exists && this.#service?.isKnownCache(name) !== true) return this.unknown;
    const created = new CacheCounters(name);
    this.#caches.set(name, created);
    return created;
  }

  /**
   * Counts a request of `kind` answered with `status` (0: no response was sent) that began at
   * `startedAt` (performance.now()).
   */
  request(counters: CacheCounters, kind: RouteKindIndex, status: number, startedAt: number): void {
    const statusClass = status >= 100 && status < 600 ? Math.floor(status / 100) : 0;
    const at = kind * STATUS_CLASSES.length + statusClass;
    counters.requests[at] = (counters.requests[at] ?? 0) + 1;
    this.#durations[kind]?.observe((performance.now() - startedAt) / 1000);
  }

  /**
   * A narinfo answered 200 from memory in the turn its request arrived (the read path's fast case): a hit
   * and a request in the lowest duration bucket, counted without reading the clock. Such an answer takes
   * microseconds, far below the lowest bound (1 ms); two clock reads would cost more than all the rest of
   * the counting, on the request a cache answers most. Their time is left out of the histogram's sum.
   */
  narinfoFromMemory(counters: CacheCounters): void {
    counters.narinfoHits++;
    this.#okFromMemory(counters, RouteKind.narinfo);
  }

  /** A NAR answered 200 from memory in the turn its request arrived: as narinfoFromMemory. */
  narFromMemory(counters: CacheCounters): void {
    this.#okFromMemory(counters, RouteKind.nar);
  }

  #okFromMemory(counters: CacheCounters, kind: RouteKindIndex): void {
    const at = kind * STATUS_CLASSES.length + 2;
    counters.requests[at] = (counters.requests[at] ?? 0) + 1;
    this.#durations[kind]?.countFastest();
  }

  /** A narinfo found (answered 200 by the caller). */
  narinfoHit(counters: CacheCounters): void {
    counters.narinfoHits++;
  }

  /** A narinfo asked for that the cache does not have. */
  narinfoMiss(counters: CacheCounters): void {
    counters.narinfoMisses++;
  }

  uploadAccepted(cache: string, kind: UploadKind): void {
    this.forCache(cache, true).uploadsAccepted[kind]++;
  }

  uploadRefused(cache: string, kind: UploadKind, code: string): void {
    const counters = this.forCache(cache, true);
    const key = `${kind} ${code}`;
    counters.uploadsRefused.set(key, (counters.uploadsRefused.get(key) ?? 0) + 1);
    if (VERIFICATION_CODES.has(code)) counters.verificationFailures++;
  }

  /** Implements the SSH server's observer (src/ssh/ssh-server.ts). */
  sessionOpened(): void {
    this.#sshOpen++;
  }

  sessionClosed(cacheName: string, command: string | undefined, outcome: 'ok' | 'failed' | 'refused'): void {
    if (outcome !== 'refused') this.#sshOpen--;
    const key = `${this.forCache(cacheName).label} ${sshProtocol(command)} ${outcome}`;
    this.#sshSessions.set(key, (this.#sshSessions.get(key) ?? 0) + 1);
  }

  /** A scheduled garbage collection ended: with its report, skipped (another collector), or failed. */
  gcRun(result: GcOutcome | 'skipped' | 'failed'): void {
    if (typeof result === 'string') {
      this.#gcRuns[result]++;
      return;
    }
    this.#gcRuns.ok++;
    this.#gcPaths += result.paths;
    this.#gcNars += result.nars;
    this.#gcBytes += result.bytes;
    this.#gcLastSuccess = Date.now() / 1000;
  }

  /** The counters of one operation of a store (src/metrics/instrument-store.ts); made once per operation. */
  storeOperation(store: string, operation: string): StoreOperation {
    const made = new StoreOperation(store, operation);
    this.#storeOperations.push(made);
    return made;
  }

  /** Counts the bytes every connection of `server` receives and sends (headers included). */
  countConnections(server: Server): void {
    server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => {
        this.#closedBytesRead += socket.bytesRead;
        this.#closedBytesWritten += socket.bytesWritten;
        this.#sockets.delete(socket);
      });
    });
  }

  /** The Prometheus text of every metric, the process metrics first (the whole server's, see options). */
  async render(): Promise<string> {
    if (this.#render !== undefined) return this.#render();
    const [process, server] = await Promise.all([this.#process.metrics(), this.registry.metrics()]);
    return process + server;
  }

  /** This process's metrics, the process metrics first, as JSON for a cluster primary to aggregate. */
  async snapshot(): Promise<MetricsSnapshot> {
    const [process, server] = await Promise.all([
      this.#process.getMetricsAsJSON(),
      this.registry.getMetricsAsJSON(),
    ]);
    return [...process, ...server];
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  #allCaches(): CacheCounters[] {
    return [...this.#caches.values(), this.unknown, this.none, this.local];
  }

  /** One sample per cache with a non-zero value of `read`. */
  #perCache(read: (counters: CacheCounters) => number, labels: Record<string, string> = {}): Sample[] {
    const samples: Sample[] = [];
    for (const counters of this.#allCaches()) {
      const value = read(counters);
      if (value !== 0) samples.push({ labels: { cache: counters.label, ...labels }, value });
    }
    return samples;
  }

  #register(): void {
    const registry = this.registry;
    new CollectedMetric(
      'niche_http_requests_total',
      'HTTP requests answered, by cache, route kind (narinfo, nar, upload, api, other) and status class (none: the client went away before any answer)',
      'counter',
      () =>
        this.#allCaches().flatMap((counters) => {
          const samples: Sample[] = [];
          counters.requests.forEach((value, at) => {
            if (value === 0) return;
            const kind = ROUTE_KINDS[Math.floor(at / STATUS_CLASSES.length)] ?? 'other';
            const statusClass = STATUS_CLASSES[at % STATUS_CLASSES.length] ?? 'none';
            samples.push({ labels: { cache: counters.label, kind, status_class: statusClass }, value });
          });
          return samples;
        }),
    ).register(registry);
    new CollectedMetric(
      'niche_http_request_duration_seconds',
      'Time from a request to the end of its answer, by route kind',
      'histogram',
      () =>
        this.#durations.flatMap((durations, kind) =>
          durations.samples('niche_http_request_duration_seconds', { kind: ROUTE_KINDS[kind] ?? 'other' }),
        ),
    ).register(registry);
    new CollectedMetric(
      'niche_http_received_bytes_total',
      'Bytes received on HTTP connections, headers included',
      'counter',
      () => [{ labels: {}, value: this.#bytes().read }],
    ).register(registry);
    new CollectedMetric(
      'niche_http_sent_bytes_total',
      'Bytes sent on HTTP connections, headers included',
      'counter',
      () => [{ labels: {}, value: this.#bytes().written }],
    ).register(registry);
    new CollectedMetric('niche_http_open_connections', 'HTTP connections open now', 'gauge', () => [
      { labels: {}, value: this.#sockets.size },
    ]).register(registry);
    new CollectedMetric(
      'niche_narinfo_lookups_total',
      'Narinfo requests of a cache the client may read, by cache and result (hit: found, miss: not in the cache)',
      'counter',
      () => [
        ...this.#perCache((counters) => counters.narinfoHits, { result: 'hit' }),
        ...this.#perCache((counters) => counters.narinfoMisses, { result: 'miss' }),
      ],
    ).register(registry);
    new CollectedMetric(
      'niche_uploads_accepted_total',
      'Uploads verified and stored, by cache and kind (nar, narinfo, path: both at once by the JSON API or SSH)',
      'counter',
      () =>
        (['nar', 'narinfo', 'path'] as const).flatMap((kind) =>
          this.#perCache((counters) => counters.uploadsAccepted[kind], { kind }),
        ),
    ).register(registry);
    new CollectedMetric(
      'niche_uploads_refused_total',
      'Uploads refused by the cache service, by cache, kind and error code (see the README for the codes)',
      'counter',
      () =>
        this.#allCaches().flatMap((counters) =>
          [...counters.uploadsRefused].map(([key, value]) => {
            const [kind = '', code = ''] = key.split(' ');
            return { labels: { cache: counters.label, kind, code }, value };
          }),
        ),
    ).register(registry);
    new CollectedMetric(
      'niche_upload_verification_failures_total',
      'Uploads refused because they failed verification (hash, size, NAR structure, references), by cache',
      'counter',
      () => this.#perCache((counters) => counters.verificationFailures),
    ).register(registry);
    new CollectedMetric('niche_uploads_in_progress', 'NAR uploads being received now', 'gauge', () => [
      { labels: {}, value: this.#service?.uploadsInProgress ?? 0 },
    ]).register(registry);
    new CollectedMetric(
      'niche_ssh_sessions_total',
      'SSH sessions that ended, by cache, protocol (ssh: nix-store --serve, ssh-ng: nix-daemon --stdio) and result (ok, failed, refused: over a session limit)',
      'counter',
      () =>
        [...this.#sshSessions].map(([key, value]) => {
          const [cache = '', protocol = '', result = ''] = key.split(' ');
          return { labels: { cache, protocol, result }, value };
        }),
    ).register(registry);
    new CollectedMetric('niche_ssh_sessions_open', 'SSH sessions running now', 'gauge', () => [
      { labels: {}, value: this.#sshOpen },
    ]).register(registry);
    new CollectedMetric(
      'niche_gc_runs_total',
      'Scheduled garbage collections, by result (ok, skipped: another collector was at work, failed)',
      'counter',
      () =>
        (['ok', 'skipped', 'failed'] as const).map((result) => ({
          labels: { result },
          value: this.#gcRuns[result],
        })),
    ).register(registry);
    new CollectedMetric(
      'niche_gc_removed_total',
      'What scheduled garbage collections removed: paths (of every cache) and NAR files',
      'counter',
      () => [
        { labels: { what: 'paths' }, value: this.#gcPaths },
        { labels: { what: 'nar_files' }, value: this.#gcNars },
      ],
    ).register(registry);
    new CollectedMetric(
      'niche_gc_freed_bytes_total',
      'Bytes of blobs deleted by scheduled garbage collections',
      'counter',
      () => [{ labels: {}, value: this.#gcBytes }],
    ).register(registry);
    new CollectedMetric(
      'niche_gc_last_success_timestamp_seconds',
      'When the last scheduled garbage collection ended successfully (0: none yet)',
      'gauge',
      () => [{ labels: {}, value: this.#gcLastSuccess }],
      // Set by the one process that collects (the primary, with workers); the others report 0.
      'max',
    ).register(registry);
    new CollectedMetric(
      'niche_store_operation_duration_seconds',
      'Duration of metadata and blob store operations, by store and operation',
      'histogram',
      () =>
        this.#storeOperations.flatMap((op) =>
          op.durations.samples('niche_store_operation_duration_seconds', {
            store: op.store,
            operation: op.operation,
          }),
        ),
    ).register(registry);
    new CollectedMetric(
      'niche_store_errors_total',
      'Metadata and blob store operations that failed (backend errors, not refusals), by store and operation',
      'counter',
      () =>
        this.#storeOperations
          .filter((op) => op.errors > 0)
          .map((op) => ({ labels: { store: op.store, operation: op.operation }, value: op.errors })),
    ).register(registry);
  }

  #bytes(): { read: number; written: number } {
    let read = this.#closedBytesRead;
    let written = this.#closedBytesWritten;
    for (const socket of this.#sockets) {
      read += socket.bytesRead;
      written += socket.bytesWritten;
    }
    return { read, written };
  }
}
