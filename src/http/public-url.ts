// The URL clients reach this server at, for every URL niche prints or returns (the API's `url` fields, the
// landing page, the start banner). Behind a TLS proxy the request niche sees is plain http from the proxy,
// so a URL built from it would send Nix to `http://…` and fail. Either the operator says what the public
// URL is (`public-url`), or niche believes the proxy's `X-Forwarded-Proto`, `X-Forwarded-Host` and
// `X-Forwarded-Prefix`, but only from the addresses listed in `trusted-proxies`: anyone else could send
// them. Without either, the URL is the request's own (`http://` + its Host header).
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';

/** `host`, `host:port`, `[v6]` or `[v6]:port`: what a URL's authority may be (no user info). */
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;
/** A URL path prefix such as `/nix/cache`: segments of unreserved characters. */
const PREFIX = /^(?:\/[A-Za-z0-9._~-]+)*$/;

/**
 * `http(s)://host[:port][/prefix]`, without a trailing slash. A prefix means the proxy in front serves
 * niche under that path and strips it before passing requests on.
 */
export function parsePublicUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`expected an http(s) URL such as https://cache.example.org, got ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`expected an http or https URL, got ${JSON.stringify(text)}`);
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new Error(`expected a URL without credentials, query or fragment, got ${JSON.stringify(text)}`);
  }
  const prefix = url.pathname.replace(/\/+$/, '');
  if (!PREFIX.test(prefix)) {
    throw new Error(
      `the path of ${JSON.stringify(text)} may only hold letters, digits, ".", "_", "~" and "-" segments`,
    );
  }
  return `${url.origin}${prefix}`;
}

/** An address (`10.0.0.1`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`); returned as written. */
export function parseTrustedProxy(text: string): string {
  const [address = '', length, ...rest] = text.trim().split('/');
  const family = isIP(address);
  const max = family === 4 ? 32 : 128;
  if (
    family === 0 ||
    rest.length > 0 ||
    (length !== undefined && (!/^\d{1,3}$/.test(length) || Number(length) > max))
  ) {
    throw new Error(`expected an IP address or a network such as 10.0.0.0/8, got ${JSON.stringify(text)}`);
  }
  return text.trim();
}

export interface PublicUrlSettings {
  /** Fixed public URL (`parsePublicUrl`), or undefined to derive it from each request. */
  readonly publicUrl: string | undefined;
  /** Peers whose forwarded headers are believed (`parseTrustedProxy`). */
  readonly trustedProxies: readonly string[];
}

/** The base URL (no trailing slash) clients should use, as seen by one request. */
export type BaseUrlOf = (request: IncomingMessage) => string;

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) as `10.0.0.1`. */
function plainAddress(address: string): string {
  return address.toLowerCase().startsWith('::ffff:') && isIP(address.slice(7)) === 4
    ? address.slice(7)
    : address;
}

/** The value the nearest proxy added: the last of a comma-separated header, or of repeated headers. */
function lastValue(header: string | string[] | undefined): string | undefined {
  const text = Array.isArray(header) ? header.at(-1) : header;
  const value = text?.split(',').at(-1)?.trim();
  return value === '' ? undefined : value;
}

export function baseUrlResolver(settings: PublicUrlSettings): BaseUrlOf {
  const fixed = settings.publicUrl;
  if (fixed !== undefined) return () => fixed;
  const trusted = new BlockList();
  for (const entry of settings.trustedProxies) {
    const [address = '', length] = entry.split('/');
    const type = isIP(address) === 4 ? 'ipv4' : 'ipv6';
    if (length === undefined) trusted.addAddress(plainAddress(address), type);
    else trusted.addSubnet(plainAddress(address), Number(length), type);
  }
  const isTrusted = (address: string | undefined): boolean => {
    if (address === undefined || settings.trustedProxies.length === 0) return false;
    const plain = plainAddress(address);
    return trusted.check(plain, isIP(plain) === 4 ? 'ipv4' : 'ipv6');
  };
  return (request) => {
    const socket = request.socket as Partial<TLSSocket>;
    let protocol = socket.encrypted === true ? 'https' : 'http';
    // HTTP/2 names the host in :authority (clients send no Host header there).
    const authority = request.headers[':authority'];
    const ownHost = request.headers.host ?? (typeof authority === 'string' ? authority : undefined);
    let host =
      ownHost !== undefined && HOST.test(ownHost)
        ? ownHost
        : `${request.socket.localFamily === 'IPv6' ? `[${request.socket.localAddress ?? '::1'}]` : (request.socket.localAddress ?? '127.0.0.1')}:${request.socket.localPort ?? 80}`;
    let prefix = '';
    if (isTrusted(request.socket.remoteAddress)) {
      const proto = lastValue(request.headers['x-forwarded-proto'])?.toLowerCase();
      if (proto === 'http' || proto === 'https') protocol = proto;
      const forwardedHost = lastValue(request.headers['x-forwarded-host']);
      if (forwardedHost !== undefined && HOST.test(forwardedHost)) host = forwardedHost;
      const forwardedPrefix = lastValue(request.headers['x-forwarded-prefix'])?.replace(/\/+$/, '');
      if (forwardedPrefix !== undefined && PREFIX.test(forwardedPrefix)) prefix = forwardedPrefix;
    }
    return `${protocol}://${host}${prefix}`;
  };
}
