// Starts and stops a complete niche server: stores, default cache, cache service, HTTP front end.
// Used by `niche serve` and by tests that want a real server in-process.
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { Authenticator } from '../cache/auth.js';
import { CacheService } from '../cache/cache-service.js';
import type { ServeConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { buildHttpServer } from '../http/server.js';
import { bootstrap, type BootstrapResult } from './bootstrap.js';
import { openStores, type Stores } from './data-dir.js';

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly stores: Stores;
  readonly service: CacheService;
  readonly http: FastifyInstance;
  readonly bootstrapped: BootstrapResult | undefined;
  /** Stops accepting connections, finishes in-flight requests, closes the stores. */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly logger?: Logger;
}

export async function startServer(config: ServeConfig, options: StartOptions = {}): Promise<RunningServer> {
  const logger = options.logger ?? pino({ level: config.logLevel });
  const stores = await openStores(config.dataDir);
  let http: FastifyInstance | undefined;
  try {
    const bootstrapped = await bootstrap(stores.db, config);
    const service = new CacheService({ db: stores.db, blobs: stores.blobs, logger, limits: config.limits });
    // Parse every cache's keys now: a corrupt key stops the start instead of failing requests later.
    for (const cache of await stores.db.listCaches()) await service.keys(cache);
    const authenticator = new Authenticator(stores.db);
    http = buildHttpServer({ service, authenticator }, { logger });
    try {
      await http.listen({ host: config.listen.host, port: config.listen.port });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const reason =
        code === 'EADDRINUSE'
          ? 'the address is already in use (is another server running?)'
          : code === 'EACCES'
            ? 'permission denied (ports below 1024 need privileges)'
            : code === 'EADDRNOTAVAIL'
              ? 'the address is not available on this machine'
              : (error as Error).message;
      throw new ConfigError(
        'LISTEN_FAILED',
        `cannot listen on ${config.listen.host}:${config.listen.port}: ${reason}`,
        {
          cause: error,
        },
      );
    }
    const address = http.server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const url = `http://${host}:${address.port}`;
    const server = http;
    let closing: Promise<void> | undefined;
    return {
      url,
      port: address.port,
      stores,
      service,
      http,
      bootstrapped,
      close: () => {
        closing ??= (async () => {
          await server.close();
          await stores.db.close();
          await stores.blobs.close();
        })();
        return closing;
      },
    };
  } catch (error) {
    await http?.close();
    await stores.db.close();
    await stores.blobs.close();
    throw error;
  }
}
