// The base URL of a request: public-url wins; forwarded headers count only from trusted addresses (IPv4,
// IPv6, networks, IPv4 peers on dual-stack sockets), take the nearest proxy's value, and are ignored when
// malformed; the URL validators refuse what cannot be a public URL or a proxy address.
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { baseUrlResolver, parsePublicUrl, parseTrustedProxy } from '../../../src/http/public-url.js';

function fakeRequest(remoteAddress: string, headers: IncomingMessage['headers']): IncomingMessage {
  return {
    headers: { host: '10.9.9.9:5000', ...headers },
    socket: { remoteAddress, localAddress: '10.9.9.9', localPort: 5000 },
  } as unknown as IncomingMessage;
}

const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'cache.example.org' };

describe('baseUrlResolver', () => {
  it('trusts exactly the configured addresses and networks', () => {
    const base = baseUrlResolver({ publicUrl: undefined, trustedProxies: ['10.0.0.0/8', 'fd00::/8', '::1'] });
    for (const peer of ['10.1.2.3', '::ffff:10.1.2.3', 'fd12::1', '::1']) {
      assert.equal(base(fakeRequest(peer, forwarded)), 'https://cache.example.org', peer);
    }
    for (const peer of ['11.1.2.3', '127.0.0.1', '::ffff:127.0.0.1', 'fe80::1', '::2']) {
      assert.equal(base(fakeRequest(peer, forwarded)), 'http://10.9.9.9:5000', peer);
    }
    assert.equal(
      baseUrlResolver({ publicUrl: undefined, trustedProxies: [] })(fakeRequest('127.0.0.1', forwarded)),
      'http://10.9.9.9:5000',
    );
  });

  it('takes the nearest proxy value, ignores junk, and lets public-url win', () => {
    const base = baseUrlResolver({ publicUrl: undefined, trustedProxies: ['127.0.0.1'] });
    assert.equal(
      base(
        fakeRequest('127.0.0.1', {
          'x-forwarded-proto': 'gopher, HTTPS',
          'x-forwarded-host': ['evil.example', 'cache.example.org:8443'],
          'x-forwarded-prefix': '/nix/',
        }),
      ),
      'https://cache.example.org:8443/nix',
    );
    assert.equal(
      base(
        fakeRequest('127.0.0.1', {
          'x-forwarded-proto': 'ftp',
          'x-forwarded-host': 'a/b',
          'x-forwarded-prefix': '../x',
          host: 'bad host',
        }),
      ),
      'http://10.9.9.9:5000',
    );
    const fixed = baseUrlResolver({ publicUrl: 'https://c.example/p', trustedProxies: ['127.0.0.1'] });
    assert.equal(fixed(fakeRequest('127.0.0.1', forwarded)), 'https://c.example/p');
  });

  it('validates public URLs and proxy addresses', () => {
    assert.equal(parsePublicUrl('HTTPS://Cache.Example.org:443/nix//'), 'https://cache.example.org/nix');
    assert.equal(parsePublicUrl('http://[::1]:8080'), 'http://[::1]:8080');
    for (const bad of [
      'cache.example.org',
      'ftp://x',
      'https://u@x',
      'https://x/?a',
      'https://x/#f',
      'https://x/a%20b',
    ])
      assert.throws(() => parsePublicUrl(bad), Error, bad);
    for (const good of ['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8', '0.0.0.0/0'])
      assert.equal(parseTrustedProxy(good), good);
    for (const bad of ['localhost', '10.0.0.0/33', '::/129', '1.2.3.4/', '1.2.3.4/8/8', ''])
      assert.throws(() => parseTrustedProxy(bad), Error, bad);
  });
});
