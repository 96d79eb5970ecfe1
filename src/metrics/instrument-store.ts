// Times every operation of a metadata or blob store and counts the ones that fail, without the stores or
// the cache service knowing: the server hands the service a wrapper that forwards each method call to the
// store itself (so its private fields still work) and notes how long the returned promise took. The
// wrapper for each method is made once, on first use.
import { NicheError } from '../errors.js';
import type { ServerMetrics, StoreOperation } from './server-metrics.js';

type AnyMethod = (...args: unknown[]) => unknown;

/**
 * A failure of the backend, as opposed to a refusal it reports on purpose (a conflict, a missing row, an
 * upload that failed its checks) or a write abandoned because its client went away (an aborted signal).
 */
function isStoreFailure(error: unknown, args: readonly unknown[]): boolean {
  if (error instanceof NicheError && error.kind !== 'unavailable' && error.kind !== 'internal') return false;
  return !args.some(
    (arg) =>
      typeof arg === 'object' && arg !== null && (arg as { signal?: AbortSignal }).signal?.aborted === true,
  );
}

function measured(target: object, method: AnyMethod, stats: StoreOperation): AnyMethod {
  const failed = (error: unknown, args: readonly unknown[]): void => {
    if (isStoreFailure(error, args)) stats.errors++;
  };
  return (...args) => {
    const startedAt = performance.now();
    let result: unknown;
    try {
      result = method.apply(target, args);
    } catch (error) {
      failed(error, args);
      throw error;
    }
    if (!(result instanceof Promise)) {
      // Synchronous results (a `list` iterator) are timed to the call only.
      stats.done(startedAt);
      return result;
    }
    return result.then(
      (value: unknown) => {
        stats.done(startedAt);
        return value;
      },
      (error: unknown) => {
        failed(error, args);
        throw error;
      },
    );
  };
}

/** `store` with every method timed and its failures counted under `name` ("metadata" or "blob"). */
export function instrumentStore<T extends object>(store: T, name: string, metrics: ServerMetrics): T {
  const wrappers = new Map<string, AnyMethod>();
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function' || typeof property !== 'string') return value;
      let wrapper = wrappers.get(property);
      if (wrapper === undefined) {
        wrapper = measured(target, value as AnyMethod, metrics.storeOperation(name, property));
        wrappers.set(property, wrapper);
      }
      return wrapper;
    },
  });
}
