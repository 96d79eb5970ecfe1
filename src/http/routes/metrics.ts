// `GET /metrics` on the main listener: the server's Prometheus metrics (src/metrics/server-metrics.ts).
//
// Who may read them is the operator's choice (config key `metrics`), and by default it is whoever holds a
// server-admin token ('admin'): the metrics name every cache, private ones included, and show how much
// each is used and what uploads are refused, which is not for anyone who can reach a public cache.
// Prometheus sends a token easily (`authorization: { credentials_file: … }` in a scrape config), so the
// safe default costs one line. 'public' opens them to all (a server behind a firewall, or one whose cache
// names are no secret); 'off' serves them only on the separate `metrics-listen` address, if any.
import type { FastifyInstance } from 'fastify';
import { requireServerAdmin } from '../../cache/admin-service.js';
import type { ServerMetrics } from '../../metrics/server-metrics.js';
import { principalOf, type HttpContext } from '../context.js';

export type MetricsAccess = 'admin' | 'public' | 'off';

export function registerMetricsRoute(
  app: FastifyInstance,
  context: HttpContext,
  metrics: ServerMetrics,
  access: Exclude<MetricsAccess, 'off'>,
): void {
  app.get('/metrics', async (request, reply) => {
    if (access === 'admin') requireServerAdmin(await principalOf(context, request), 'reading metrics');
    const text = await metrics.render();
    return reply.header('cache-control', 'no-store').type(metrics.contentType).send(text);
  });
}
