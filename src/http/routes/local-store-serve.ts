// `<mount>/serve/<hash>/<path>`: look inside a local store path without downloading its NAR, as a simple
// HTML directory listing or a single file (with Range). Confined to that store path (store-browse.ts).
// Files are served with a sandboxing CSP: a store path is arbitrary content and must not run scripts
// with the origin of the server that also hosts the caches' API.
import { extname } from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../../errors.js';
import type { LocalStore } from '../../localstore/local-store.js';
import type { BrowseEntry } from '../../localstore/store-browse.js';
import { parseStorePathHash, type StorePathHash } from '../../nix/store-path.js';
import { parseRange } from '../range.js';

type ByteRange = NonNullable<ReturnType<typeof parseRange>>;

export interface LocalServeRoute {
  Params: { readonly hash: string; readonly '*'?: string };
}

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.json': 'application/json',
  '.xml': 'application/xml',
  '.css': 'text/css',
  '.js': 'text/javascript',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.pdf': 'application/pdf',
  '.gz': 'application/gzip',
  '.xz': 'application/x-xz',
};

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function validHash(text: string): StorePathHash {
  try {
    return parseStorePathHash(text);
  } catch {
    throw new NotFoundError('NOT_FOUND', 'expected serve/<32-character store path hash>/…');
  }
}

function row(entry: BrowseEntry): string {
  const href = encodeURIComponent(entry.name) + (entry.type === 'directory' ? '/' : '');
  const name = `<a href="${escapeHtml(href)}">${escapeHtml(entry.name)}${entry.type === 'directory' ? '/' : ''}</a>`;
  const detail =
    entry.type === 'symlink'
      ? `→ ${escapeHtml(entry.target ?? '')}`
      : entry.type === 'regular'
        ? `${entry.size ?? 0} bytes${entry.executable ? ', executable' : ''}`
        : entry.type;
  return `<tr><td>${name}</td><td>${detail}</td></tr>`;
}

function directoryPage(title: string, entries: readonly BrowseEntry[], atRoot: boolean): string {
  const parent = atRoot ? '' : '<tr><td><a href="../">../</a></td><td></td></tr>\n';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}td{padding:0 1rem 0 0;font-family:monospace}</style>
</head><body><h1>${escapeHtml(title)}</h1>
<table>
${parent}${entries.map(row).join('\n')}
</table></body></html>
`;
}

/** `serve/<hash>` without a slash: redirect, so relative links in the listing resolve inside it. */
export function redirectToDirectory(
  request: FastifyRequest<LocalServeRoute>,
  reply: FastifyReply,
): FastifyReply {
  validHash(request.params.hash);
  return reply.redirect(`${encodeURIComponent(request.params.hash)}/`, 301);
}

export async function sendLocalServe(
  store: LocalStore,
  request: FastifyRequest<LocalServeRoute>,
  reply: FastifyReply,
): Promise<FastifyReply> {
  const hash = validHash(request.params.hash);
  const rest = request.params['*'] ?? '';
  const segments = rest.split('/');
  const result = await store.browse(hash, segments);
  reply.header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff');

  if (result.kind === 'directory') {
    if (rest !== '' && !rest.endsWith('/')) {
      const last = segments.at(-1) ?? '';
      return reply.redirect(`${encodeURIComponent(last)}/`, 301);
    }
    const title = `${hash}/${rest}`;
    return reply.type('text/html; charset=utf-8').send(directoryPage(title, result.entries, rest === ''));
  }

  const { handle, size, name } = result;
  let range: ByteRange | undefined;
  try {
    range = size === 0 ? undefined : parseRange(request.headers.range, size);
  } catch (error) {
    await handle.close();
    throw error;
  }
  reply
    .type(CONTENT_TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream')
    .header('content-security-policy', 'sandbox')
    .header('accept-ranges', 'bytes');
  if (range !== undefined) {
    reply
      .code(206)
      .header('content-range', `bytes ${range.start}-${range.end}/${size}`)
      .header('content-length', range.end - range.start + 1);
  } else {
    reply.header('content-length', size);
  }
  if (request.method === 'HEAD' || size === 0) {
    await handle.close();
    return reply.send();
  }
  // The stream owns the handle from here and closes it when it ends or is destroyed.
  return reply.send(handle.createReadStream({ start: range?.start ?? 0, end: range?.end ?? size - 1 }));
}
