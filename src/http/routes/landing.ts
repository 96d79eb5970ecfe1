// `/`: a small page telling a human how to point Nix at this server's public caches.
import type { FastifyInstance } from 'fastify';
import type { HttpContext } from '../context.js';

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function registerLandingRoute(app: FastifyInstance, context: HttpContext): void {
  app.get('/', async (request, reply) => {
    const base = context.baseUrl(request.raw);
    // netrc entries name the host alone (curl matches them without the port).
    const netrcHost = new URL(base).hostname.replace(/^\[(.*)\]$/, '$1');
    const caches = (await context.service.db.listCaches()).filter((cache) => cache.isPublic);
    const sections: string[] = [];
    for (const cache of caches) {
      const keys = await context.service.keys(cache);
      const conf =
        `extra-substituters = ${base}/${cache.name}\n` +
        `extra-trusted-public-keys = ${keys.publicKeys.join(' ')}`;
      sections.push(
        `<h2>${escapeHtml(cache.name)}</h2>\n<p>Add to <code>nix.conf</code>:</p>\n<pre>${escapeHtml(conf)}</pre>`,
      );
    }
    const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>niche binary cache</title>
<style>body{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}pre{background:#f4f4f4;padding:1rem;overflow-x:auto}</style>
</head><body>
<h1>niche binary cache</h1>
${sections.length > 0 ? sections.join('\n') : '<p>No public caches.</p>'}
<p>Push with <code>nix copy --to ${escapeHtml(base)}/&lt;cache&gt;/push &lt;paths&gt;</code> (the cache's push URL,
not the substituter URL) and a push token in your netrc
(<code>machine ${escapeHtml(netrcHost)} login niche password &lt;token&gt;</code>).</p>
</body></html>
`;
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(html);
  });
}
