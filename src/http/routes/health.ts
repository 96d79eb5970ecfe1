// `GET /healthz`: the process serves HTTP (a liveness probe: restart the process if this fails).
// `GET /readyz`: this replica can do its work (src/cache/readiness.ts), and is not shutting down; 503
// otherwise, naming the failing component, so a load balancer stops sending it traffic and drains it
// before it stops. Neither needs credentials; neither says more than a component and an error code.
import type { FastifyInstance } from 'fastify';
import type { Readiness } from '../../cache/readiness.js';

export interface HealthOptions {
  readonly readiness: Readiness;
  /** True once the server has begun to shut down. */
  readonly closing: () => boolean;
}

export function registerHealthRoutes(app: FastifyInstance, options: HealthOptions): void {
  app.get('/healthz', async (_request, reply) => {
    return reply.header('cache-control', 'no-store').send({ status: 'ok' });
  });

  app.get('/readyz', async (_request, reply) => {
    reply.header('cache-control', 'no-store');
    if (options.closing()) {
      return reply.code(503).send({ status: 'unavailable', reason: 'shutting down', components: [] });
    }
    const report = await options.readiness.check();
    return reply
      .code(report.ready ? 200 : 503)
      .send({ status: report.ready ? 'ok' : 'unavailable', components: report.components });
  });
}
