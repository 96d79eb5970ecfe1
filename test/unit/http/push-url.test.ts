import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pushUrlOf } from '../../../src/api/v1.js';
import { pushUrlRewrite } from '../../../src/http/push-url.js';

describe('push URLs', () => {
  const rewrite = pushUrlRewrite('/mystore');

  it('maps /<cache>/push/… to /<cache>/…, keeping the query', () => {
    assert.equal(rewrite('/main/push/nix-cache-info'), '/main/nix-cache-info');
    assert.equal(rewrite('/main/push/nar/abc.nar.zst'), '/main/nar/abc.nar.zst');
    assert.equal(rewrite('/team-2/push/0123.narinfo?x=1'), '/team-2/0123.narinfo?x=1');
    assert.equal(rewrite('/main/push'), '/main');
    assert.equal(rewrite('/main/push?a'), '/main?a');
    assert.equal(rewrite('/main/push/log/x.drv'), '/main/log/x.drv');
  });

  it('leaves everything else alone', () => {
    for (const url of [
      '/',
      '/main',
      '/main/nix-cache-info',
      '/main/pushy/nix-cache-info',
      '/main/nar/push',
      '/push',
      '/push/nix-cache-info',
      '//push/x',
      '/api/push/x',
      '/Main/push/x',
      '/mystore/push/nix-cache-info',
      '/local/push/nix-cache-info',
    ]) {
      assert.equal(rewrite(url), url, url);
    }
    assert.equal(pushUrlRewrite(undefined)('/mystore/push/x'), '/mystore/x');
  });

  it('names the push URL of a cache URL', () => {
    assert.equal(pushUrlOf('https://cache.example.org/team'), 'https://cache.example.org/team/push');
    assert.equal(pushUrlOf('http://127.0.0.1:5000/main/'), 'http://127.0.0.1:5000/main/push');
  });
});
