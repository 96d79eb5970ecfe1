// Pushing closures (`niche push`, and each batch of `niche watch-store`): ask the local Nix for the closure,
// drop paths an upstream cache has signed, ask the server which of the rest it lacks, and upload those in
// dependency order (src/client/scheduler.ts) with bounded parallelism and retries. Returns counts for the
// summary; failures are reported per path and never stop independent uploads.
import { setTimeout as sleepTimer } from 'node:timers/promises';
import { type CacheInfo, MAX_MISSING_QUERY, missingResponseSchema } from '../api/v1.js';
import type { CacheName } from '../cache/cache-name.js';
import type { NicheError } from '../errors.js';
import { DEFAULT_STORE_DIR } from '../nix/store-path.js';
import { endsPush, isRetryable, retryAfterOf } from './errors.js';
import type { ApiClient } from './http.js';
import type { NixRunner } from './nix-command.js';
import { type LocalPathInfo, queryClosure } from './path-info.js';
import type { PushReporter } from './progress.js';
import { type GraphNode, type RetryPolicy, backoffDelay, runGraph } from './scheduler.js';
import { type UploadCompression, uploadPath } from './upload.js';
import { type UpstreamKeys, parseUpstreamKeys, signedByUpstream } from './upstream.js';

export const DEFAULT_JOBS = 4;

export const DEFAULT_RETRY: Omit<RetryPolicy, 'isRetryable'> = {
  attempts: 5,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
};

export interface PushContext {
  readonly client: ApiClient;
  readonly cache: CacheName;
  /** From GET /api/v1/caches/<cache>, fetched once per command. */
  readonly cacheInfo: CacheInfo;
  readonly nix: NixRunner;
  readonly reporter: PushReporter;
  readonly compression: UploadCompression;
  readonly jobs: number;
  readonly retry?: RetryPolicy;
  readonly idleTimeoutMs?: number;
  readonly storeDir?: string;
  /** When aborted: no new uploads start, running ones finish. */
  readonly stopSignal?: AbortSignal | undefined;
  /** Waits between retries (tests make it instant). */
  readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
}

export interface PushFailure {
  readonly path: string;
  readonly error: unknown;
}

export interface PushSummary {
  /** Paths in the closures. */
  readonly closure: number;
  readonly pushed: number;
  readonly alreadyPresent: number;
  readonly skippedUpstream: number;
  readonly failed: readonly PushFailure[];
  /** Not attempted because a path they refer to failed. */
  readonly skippedDependency: number;
  /** Not attempted because the push was stopped. */
  readonly cancelled: number;
  /** The error that stopped the push (a refused token, a missing permission or cache), if one did. */
  readonly stoppedBy?: NicheError;
  readonly narBytes: number;
  readonly compressedBytes: number;
  readonly elapsedMs: number;
}

export function retryPolicy(overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  return { ...DEFAULT_RETRY, isRetryable, ...overrides };
}

/** Runs `action`, retrying retryable errors as the policy says. */
async function withRetry<T>(
  action: () => Promise<T>,
  policy: RetryPolicy,
  sleep: (ms: number, signal: AbortSignal | undefined) => Promise<void>,
  signal: AbortSignal | undefined,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await action();
    } catch (error) {
      if (attempt >= policy.attempts || !policy.isRetryable(error) || signal?.aborted === true) throw error;
      await sleep(backoffDelay(policy, attempt, Math.random, retryAfterOf(error)), signal);
    }
  }
}

/** Waits `ms`, or less if `signal` aborts first (never rejects). */
const defaultSleep = async (ms: number, signal: AbortSignal | undefined): Promise<void> => {
  await sleepTimer(ms, undefined, signal === undefined ? {} : { signal }).catch(() => undefined);
};

/** The subset of `paths` (full store paths) that the cache does not have. */
export async function findMissing(
  client: ApiClient,
  cache: string,
  paths: readonly string[],
  retry: RetryPolicy,
  sleep: (ms: number, signal: AbortSignal | undefined) => Promise<void> = defaultSleep,
): Promise<Set<string>> {
  const missing = new Set<string>();
  for (let start = 0; start < paths.length; start += MAX_MISSING_QUERY) {
    const chunk = paths.slice(start, start + MAX_MISSING_QUERY);
    const answer = await withRetry(
      () =>
        client.post(`/caches/${encodeURIComponent(cache)}/missing`, { paths: chunk }, missingResponseSchema),
      retry,
      sleep,
      undefined,
    );
    for (const path of answer.missing) missing.add(path);
  }
  return missing;
}

/** Pushes the closures of `roots` (store paths or links to them). */
export async function pushClosures(context: PushContext, roots: readonly string[]): Promise<PushSummary> {
  const started = Date.now();
  const storeDir = context.storeDir ?? DEFAULT_STORE_DIR;
  const upstream: UpstreamKeys = parseUpstreamKeys(context.cacheInfo.upstreamKeys);
  for (const key of upstream.invalid) context.reporter.note(`warning: ignoring invalid upstream key ${key}`);
  const closure = await queryClosure(context.nix, roots, storeDir);
  const first = await pushPass(context, closure, upstream);
  // Uploads carry the upstream signatures of skipped references, which niche verifies. A server that
  // does not (or no longer lists that key) refuses the referrers; then the upstream paths are pushed
  // after all, and the refused ones again.
  const refused = first.failed.filter(
    (failure) => (failure.error as { code?: unknown } | undefined)?.code === 'REFERENCE_MISSING',
  );
  if (
    refused.length === 0 ||
    first.skippedUpstream === 0 ||
    first.stoppedBy !== undefined ||
    context.stopSignal?.aborted === true
  ) {
    return { ...first, elapsedMs: Date.now() - started };
  }
  context.reporter.note(
    `${refused.length} paths were refused because paths signed upstream are not in the cache; ` +
      `pushing those ${first.skippedUpstream} too, then the refused ones again`,
  );
  const second = await pushPass(context, closure, { keys: [], invalid: [] });
  return {
    ...second,
    pushed: first.pushed + second.pushed,
    alreadyPresent: second.alreadyPresent - first.pushed,
    narBytes: first.narBytes + second.narBytes,
    compressedBytes: first.compressedBytes + second.compressedBytes,
    elapsedMs: Date.now() - started,
  };
}

/** One pass over a closure: skip upstream-signed paths, ask what is missing, upload that. */
async function pushPass(
  context: PushContext,
  closure: readonly LocalPathInfo[],
  upstream: UpstreamKeys,
): Promise<PushSummary> {
  const storeDir = context.storeDir ?? DEFAULT_STORE_DIR;
  const retry = context.retry ?? retryPolicy();
  const sleep = context.sleep ?? defaultSleep;
  const candidates: LocalPathInfo[] = [];
  const upstreamPaths = new Map<string, LocalPathInfo>();
  for (const info of closure) {
    if (signedByUpstream(info, upstream, storeDir)) upstreamPaths.set(info.path, info);
    else candidates.push(info);
  }
  const skippedUpstream = upstreamPaths.size;
  const missing = await findMissing(
    context.client,
    context.cache,
    candidates.map((info) => info.path),
    retry,
    sleep,
  );
  const uploads = candidates.filter((info) => missing.has(info.path));
  let alreadyPresent = candidates.length - uploads.length;
  context.reporter.planned({
    closure: closure.length,
    uploads: uploads.length,
    narBytes: uploads.reduce((total, info) => total + info.narSize, 0),
    alreadyPresent,
    skippedUpstream,
  });

  const nodes: GraphNode<LocalPathInfo>[] = uploads.map((info) => ({
    id: info.path,
    dependencies: info.references.map((reference) => reference.toString(storeDir)),
    value: info,
  }));
  // The first error that ends the whole push (src/client/errors.ts, endsPush) starts nothing more.
  const halt = new AbortController();
  let stoppedBy: NicheError | undefined;
  let pushed = 0;
  let narBytes = 0;
  let compressedBytes = 0;
  const outcomes = await runGraph(
    nodes,
    async (node) => {
      let attemptBytes = 0;
      try {
        const upstreamReferences = node.value.references.flatMap((reference) => {
          const vouched = upstreamPaths.get(reference.toString(storeDir));
          return vouched === undefined ? [] : [vouched];
        });
        const upload = await uploadPath(context.client, context.cache, node.value, {
          upstreamReferences,
          compression: context.compression,
          storeDir,
          idleTimeoutMs: context.idleTimeoutMs,
          onNarBytes: (bytes) => {
            attemptBytes += bytes;
            context.reporter.progress(node.id, bytes);
          },
        });
        if (upload.result.status === 'unchanged') {
          // Someone else pushed it since the missing check.
          alreadyPresent++;
        } else {
          pushed++;
          narBytes += upload.narBytes;
          compressedBytes += upload.compressedBytes;
          context.reporter.pushed(node.id, upload.narBytes, upload.compressedBytes);
        }
      } catch (error) {
        context.reporter.progress(node.id, -attemptBytes);
        if (endsPush(error)) {
          stoppedBy ??= error;
          halt.abort();
        }
        throw error;
      }
    },
    {
      concurrency: context.jobs,
      retry,
      stopSignal:
        context.stopSignal === undefined ? halt.signal : AbortSignal.any([halt.signal, context.stopSignal]),
      sleep,
      onEvent: (event) => {
        if (event.type === 'retry') {
          context.reporter.retrying(event.node.id, event.attempt, event.error, event.delayMs);
        } else if (event.type === 'failed') {
          context.reporter.failed(event.node.id, event.error);
        } else if (event.type === 'skipped') {
          context.reporter.skipped(event.node.id, event.dependency);
        }
      },
    },
  );
  const failed: PushFailure[] = [];
  let skippedDependency = 0;
  let cancelled = 0;
  for (const [path, outcome] of outcomes) {
    if (outcome.status === 'failed') failed.push({ path, error: outcome.error });
    else if (outcome.status === 'skipped') skippedDependency++;
    else if (outcome.status === 'cancelled') cancelled++;
  }
  return {
    closure: closure.length,
    pushed,
    alreadyPresent,
    skippedUpstream,
    failed,
    skippedDependency,
    cancelled,
    narBytes,
    compressedBytes,
    elapsedMs: 0,
    ...(stoppedBy === undefined ? {} : { stoppedBy }),
  };
}
